// client.mjs drives a gopeft server with the official openai npm package,
// as an application would, and prints what it got as one JSON object.
//
//   node client.mjs BASE_URL SPEC.json
//
// SPEC: {"concurrency": N, "requests": [{"id": "...", "kind": "chat" | "completion",
//        "stream": bool, "params": {...OpenAI body without stream...}}]}
// Output: {"results": [{"id", "ok": true, "choices": [{"index", "text", "finish_reason"}],
//          "usage", "chunks", "done"} | {"id", "ok": false, "status", "type", "code", "param", "message"}]}
// Requests run N at a time; every request's result is reported, errors included.
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const [baseURL, specPath] = process.argv.slice(2);
if (!baseURL || !specPath) {
  console.error("usage: node client.mjs BASE_URL SPEC.json");
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 600_000 });

async function one(req) {
  const api = req.kind === "chat" ? client.chat.completions : client.completions;
  const choices = new Map();
  const choice = (i) => {
    if (!choices.has(i)) choices.set(i, { index: i, text: "", finish_reason: null });
    return choices.get(i);
  };
  try {
    if (!req.stream) {
      const r = await api.create({ ...req.params });
      for (const c of r.choices) {
        const ch = choice(c.index);
        ch.text = req.kind === "chat" ? c.message.content : c.text;
        ch.finish_reason = c.finish_reason;
        if (req.kind === "chat" && c.message.role !== "assistant") throw new Error(`role ${c.message.role}`);
      }
      return { id: req.id, ok: true, object: r.object, choices: [...choices.values()], usage: r.usage };
    }
    const stream = await api.create({ ...req.params, stream: true, stream_options: { include_usage: true } });
    let usage = null, chunks = 0, object = null, roles = 0;
    for await (const chunk of stream) {
      chunks++;
      object = chunk.object;
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        const ch = choice(c.index);
        if (req.kind === "chat") {
          if (c.delta.role === "assistant") roles++;
          ch.text += c.delta.content ?? "";
        } else {
          ch.text += c.text ?? "";
        }
        if (c.finish_reason) ch.finish_reason = c.finish_reason;
      }
    }
    return { id: req.id, ok: true, object, choices: [...choices.values()], usage, chunks, roles };
  } catch (e) {
    if (e instanceof OpenAI.APIError) {
      return { id: req.id, ok: false, status: e.status ?? null, type: e.type ?? null, code: e.code ?? null,
        param: e.param ?? null, message: e.message };
    }
    return { id: req.id, ok: false, status: null, message: String(e && e.stack || e) };
  }
}

const results = new Array(spec.requests.length);
let next = 0;
async function worker() {
  while (next < spec.requests.length) {
    const i = next++;
    results[i] = await one(spec.requests[i]);
  }
}
await Promise.all(Array.from({ length: Math.max(1, spec.concurrency || 1) }, worker));
process.stdout.write(JSON.stringify({ results }) + "\n");
