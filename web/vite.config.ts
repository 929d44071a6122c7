import { loadEnv } from 'vite'
import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'

// The routes `tether serve` exposes. The dev server proxies them, so the UI is developed against
// a real server with hot reload. Point it elsewhere with TETHER_URL=http://host:port npm run dev.
const API_PREFIXES = ['/config', '/agents', '/sessions', '/runs']

export default defineConfig(({ mode }) => {
  const target = loadEnv(mode, '.', 'TETHER_').TETHER_URL ?? 'http://127.0.0.1:8000'
  return {
    plugins: [vue()],
    // Deliberate: relative asset URLs, so the built index.html works wherever it is mounted.
    base: './',
    build: {
      outDir: '../src/tether/web',
      emptyOutDir: true,
      assetsDir: 'assets',
    },
    server: {
      proxy: Object.fromEntries(
        API_PREFIXES.map((prefix) => [prefix, { target, changeOrigin: true }]),
      ),
    },
    test: {
      include: ['src/**/*.test.ts'],
      environment: 'node',
    },
  }
})
