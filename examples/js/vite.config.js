import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The page calls tether through Vite's proxy, so `make run` needs no CORS set-up.
const TETHER = process.env.TETHER_URL ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  server: { proxy: { '/agents': TETHER, '/runs': TETHER } },
});
