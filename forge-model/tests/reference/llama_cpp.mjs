// llama.cpp (through node-llama-cpp) as the reference for forge-model's GGUF
// path. Usage: node llama_cpp.mjs REQUEST.json RESPONSE.json, with the
// current directory (or FORGE_NODE_LLAMA_CPP_DIR) holding
// node_modules/node-llama-cpp.
//
// REQUEST: {"model": path, "threads": 2, "top": K, "kv_type": "F32" (optional; default F16),
//           "flash_attention": bool (optional; default node-llama-cpp's),
//           "probs": [[id, ...], ...],      // next-token distribution after each id list
//           "tokenize": ["text", ...]}      // token ids with special tokens parsed
// RESPONSE: {"version", "probs": [[[id, p], ...top K by p], ...],
//            "tokenize": [[id, ...], ...], "prob_sums": [...]}
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [requestPath, responsePath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(requestPath, "utf8"));
const base = resolve(process.env.FORGE_NODE_LLAMA_CPP_DIR ?? process.cwd());
const pkgDir = join(base, "node_modules", "node-llama-cpp");
const { getLlama } = await import(pathToFileURL(join(pkgDir, "dist", "index.js")).href);
const version = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0 });
const threads = req.threads ?? 2;
const out = { version: `node-llama-cpp ${version}`, probs: [], prob_sums: [], tokenize: [] };

for (const text of req.tokenize ?? []) {
  out.tokenize.push(Array.from(model.tokenize(text, true)));
}

if ((req.probs ?? []).length > 0) {
  const longest = Math.max(...req.probs.map((p) => p.length));
  const context = await model.createContext({
    contextSize: Math.max(256, longest + 8),
    batchSize: Math.max(64, longest + 8),
    threads,
    sequences: 1,
    ...(req.kv_type ? { experimentalKvCacheKeyType: req.kv_type, experimentalKvCacheValueType: req.kv_type } : {}),
    ...(req.flash_attention !== undefined ? { flashAttention: req.flash_attention } : {}),
  });
  const sequence = context.getSequence();
  const top = req.top ?? 20;
  for (const ids of req.probs) {
    await sequence.clearHistory();
    const input = ids.slice(0, -1);
    input.push([ids[ids.length - 1], {
      generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } },
    }]);
    const res = await sequence.controlledEvaluate(input);
    const probs = res[ids.length - 1].next.probabilities;
    let sum = 0;
    const entries = [];
    for (const [id, p] of probs) { sum += p; entries.push([id, p]); }
    entries.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    out.probs.push(entries.slice(0, top));
    out.prob_sums.push(sum);
  }
  await context.dispose();
}
await model.dispose();
writeFileSync(responsePath, JSON.stringify(out));
