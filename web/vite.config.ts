import { loadEnv } from 'vite'
import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import { copyFileSync, mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Plugin } from 'vite'

// The API docs' scripts, served by `tether serve` at /docs and /redoc with no CDN (works offline).
const DOCS_ASSETS: Record<string, string> = {
  'swagger-ui-bundle.js': 'node_modules/swagger-ui-dist/swagger-ui-bundle.js',
  'swagger-ui.css': 'node_modules/swagger-ui-dist/swagger-ui.css',
  'redoc.standalone.js': 'node_modules/redoc/bundles/redoc.standalone.js',
}

function docsAssets(outDir: string): Plugin {
  return {
    name: 'tether-docs-assets',
    apply: 'build',
    closeBundle() {
      const target = resolve(outDir, 'docs-assets')
      mkdirSync(target, { recursive: true })
      for (const [name, source] of Object.entries(DOCS_ASSETS)) copyFileSync(source, resolve(target, name))
    },
  }
}

// The routes `tether serve` exposes. The dev server proxies them, so the UI is developed against
// a real server with hot reload. Point it elsewhere with TETHER_URL=http://host:port npm run dev.
const API_PREFIXES = ['/config', '/agents', '/sessions', '/runs']

export default defineConfig(({ mode }) => {
  const target = loadEnv(mode, '.', 'TETHER_').TETHER_URL ?? 'http://127.0.0.1:8000'
  return {
    plugins: [vue(), docsAssets('../src/tether/web')],
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
