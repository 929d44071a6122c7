// useChat (AI SDK) against tether's UI message stream route. Stop drops the response, which
// cancels the run (reason "disconnect"); tether keeps the partial answer in the chat's history.
// A tool that needs approval (try ?agent=records-clerk) shows Approve / Deny: the answer goes
// back in the next chat request, and tether resumes the paused run.
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from 'ai';
import { useState } from 'react';
import { createRoot } from 'react-dom/client';

const AGENT = new URLSearchParams(location.search).get('agent') ?? 'assistant';

function ToolPart({ part, onAnswer }) {
  const name = part.type.replace(/^tool-/, '');
  return (
    <span data-tool-state={part.state}>
      {' '}[{name} {JSON.stringify(part.input)}: {part.state}]
      {part.state === 'approval-requested' && (
        <>
          <button type="button" onClick={() => onAnswer(part.approval.id, true)}>Approve</button>
          <button type="button" onClick={() => onAnswer(part.approval.id, false)}>Deny</button>
        </>
      )}
    </span>
  );
}

function Chat() {
  const [input, setInput] = useState('');
  const { messages, sendMessage, status, stop, addToolApprovalResponse } = useChat({
    transport: new DefaultChatTransport({ api: `/agents/${AGENT}/chat` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  });
  const busy = status === 'submitted' || status === 'streaming';
  const answer = (id, approved) => addToolApprovalResponse({ id, approved });
  return (
    <main style={{ fontFamily: 'sans-serif', maxWidth: 640, margin: '2em auto' }}>
      <h1>useChat on tether ({AGENT})</h1>
      {messages.map((m) => (
        <p key={m.id}>
          <b>{m.role}:</b>{' '}
          {m.parts.map((p, i) => {
            if (p.type === 'text') return <span key={i}>{p.text}</span>;
            if (p.type.startsWith('tool-')) return <ToolPart key={i} part={p} onAnswer={answer} />;
            return null;
          })}
        </p>
      ))}
      <form onSubmit={(e) => {
        e.preventDefault();
        if (input.trim()) { sendMessage({ text: input }); setInput(''); }
      }}>
        <input value={input} onChange={(e) => setInput(e.target.value)} disabled={busy} />
        {/* Distinct keys: reusing one <button> would turn the Stop click into a submit. */}
        {busy
          ? <button key="stop" type="button" onClick={stop}>Stop</button>
          : <button key="send" type="submit">Send</button>}
      </form>
    </main>
  );
}

createRoot(document.getElementById('root')).render(<Chat />);
