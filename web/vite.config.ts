import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// `npm run dev` proxies the API and Socket.IO to a server started with `cargo xtask run`.
const server = process.env.MAESTRO_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  plugins: [preact()],
  build: {
    target: "es2022",
    // Hashed file names under assets/: the server caches them for a year.
    assetsDir: "assets",
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": server,
      "/socket.io": { target: server, ws: true },
    },
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
