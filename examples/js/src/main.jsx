// useChat (AI SDK) against tether's UI message stream route. Stop drops the response, which
// cancels the run (reason "disconnect"); tether keeps the partial answer in the chat's history.
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport } from 'ai';
import { useState } from 'react';
import { createRoot } from 'react-dom/client';

const AGENT = new URLSearchParams(location.search).get('agent') ?? 'assistant';

function Chat() {
  const [input, setInput] = useState('');
  const { messages, sendMessage, status, stop } = useChat({
    transport: new DefaultChatTransport({ api: `/agents/${AGENT}/chat` }),
  });
  const busy = status === 'submitted' || status === 'streaming';
  return (
    <main style={{ fontFamily: 'sans-serif', maxWidth: 640, margin: '2em auto' }}>
      <h1>useChat on tether ({AGENT})</h1>
      {messages.map((m) => (
        <p key={m.id}>
          <b>{m.role}:</b> {m.parts.filter((p) => p.type === 'text').map((p) => p.text).join('')}
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
