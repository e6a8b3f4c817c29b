// llama.cpp (through node-llama-cpp) on Forge's exported GGUF files.
// Usage: node llama_cpp_export.mjs REQUEST.json RESPONSE.json, with
// FORGE_NODE_LLAMA_CPP_DIR (or the current directory) holding
// node_modules/node-llama-cpp.
//
// REQUEST: {"model": path, "lora": path (optional), "threads": 2, "vocab": N,
//           "kv_type": "F32" (optional),
//           "flash_attention": bool (optional; default node-llama-cpp's),
//           "probs": [[id, ...], ...],   // full next-token distribution after each list
//           "ppl": [id, ...],            // perplexity of this token sequence (optional)
//           "tokenize": ["text", ...]}   // ids with special tokens parsed
// RESPONSE (JSON): {"version", "tokenize": [[id, ...]], "prob_sums": [...],
//                   "ppl": {"tokens", "nll", "ppl"} | null,
//                   "flash_attention": what the context used}
// RESPONSE.bin: the distributions as little-endian f32, one row of N per list.
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
const vocab = req.vocab;
const out = { version: `node-llama-cpp ${version}`, tokenize: [], prob_sums: [], ppl: null };

for (const text of req.tokenize ?? []) {
  out.tokenize.push(Array.from(model.tokenize(text, true)));
}

const probs = req.probs ?? [];
const ppl = req.ppl ?? [];
const rows = new Float32Array(probs.length * vocab);
if (probs.length > 0 || ppl.length > 0) {
  const longest = Math.max(ppl.length, ...probs.map((p) => p.length));
  const context = await model.createContext({
    contextSize: Math.max(256, longest + 8),
    batchSize: Math.max(64, longest + 8),
    threads,
    sequences: 1,
    ...(req.lora ? { lora: { adapters: [{ filePath: req.lora, scale: 1 }] } } : {}),
    ...(req.flash_attention !== undefined ? { flashAttention: req.flash_attention } : {}),
    ...(req.kv_type ? { experimentalKvCacheKeyType: req.kv_type, experimentalKvCacheValueType: req.kv_type } : {}),
  });
  out.flash_attention = context.flashAttention;
  const sequence = context.getSequence();
  const next = { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } };
  for (const [row, ids] of probs.entries()) {
    await sequence.clearHistory();
    const input = ids.slice(0, -1);
    input.push([ids[ids.length - 1], next]);
    const res = await sequence.controlledEvaluate(input);
    let sum = 0;
    for (const [id, p] of res[ids.length - 1].next.probabilities) {
      rows[row * vocab + id] = p;
      sum += p;
    }
    out.prob_sums.push(sum);
  }
  if (ppl.length > 1) {
    // One sequence over the whole text, fed in pieces so that only one
    // piece's full-vocabulary probability maps are alive at a time.
    await sequence.clearHistory();
    const piece = 32;
    let nll = 0;
    for (let start = 0; start + 1 < ppl.length; start += piece) {
      const end = Math.min(start + piece, ppl.length - 1);
      const input = ppl.slice(start, end).map((id) => [id, next]);
      await sequence.controlledEvaluate(input, {
        onTokenResult(i, res) {
          const p = res.next.probabilities.get(ppl[start + i + 1]) ?? 0;
          nll -= Math.log(Math.max(p, 1e-30));
        },
      });
    }
    const n = ppl.length - 1;
    out.ppl = { tokens: n, nll, ppl: Math.exp(nll / n) };
  }
  await context.dispose();
}
await model.dispose();
writeFileSync(responsePath, JSON.stringify(out));
writeFileSync(responsePath + ".bin", Buffer.from(rows.buffer));
