// llama.cpp (node-llama-cpp) timing server for forge-model's bench.
// Usage: node llama_cpp_bench.mjs MODEL.gguf THREADS, cwd (or
// FORGE_NODE_LLAMA_CPP_DIR) holding node_modules/node-llama-cpp.
// Reads one JSON request per stdin line, answers one JSON line:
//   {"op": "pp", "tokens": [...], "iters": n}          -> {"ns": total prompt-processing time}
//   {"op": "gen", "tokens": [...], "n": m, "iters": k} -> {"ns": total time of m greedy decode steps
//                                                          after the (untimed) prompt}
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const [modelPath, threadsArg] = process.argv.slice(2);
const base = resolve(process.env.FORGE_NODE_LLAMA_CPP_DIR ?? process.cwd());
const pkgDir = join(base, "node_modules", "node-llama-cpp");
const { getLlama } = await import(pathToFileURL(join(pkgDir, "dist", "index.js")).href);
const version = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({
  contextSize: 1024, batchSize: 512, threads: Number(threadsArg ?? 2), sequences: 1,
});
const sequence = context.getSequence();
process.stdout.write(JSON.stringify({ ready: true, version: `node-llama-cpp ${version}` }) + "\n");

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let ns = 0n;
  for (let i = 0; i < req.iters; i++) {
    await sequence.clearHistory();
    if (req.op === "pp") {
      const t0 = process.hrtime.bigint();
      await sequence.evaluateWithoutGeneratingNewTokens(req.tokens);
      ns += process.hrtime.bigint() - t0;
    } else {
      await sequence.evaluateWithoutGeneratingNewTokens(req.tokens.slice(0, -1));
      let next = req.tokens[req.tokens.length - 1];
      const t0 = process.hrtime.bigint();
      for (let j = 0; j < req.n; j++) {
        const res = await sequence.controlledEvaluate([
          [next, { generateNext: { token: true, options: { temperature: 0 } } }],
        ]);
        next = res[0].next.token;
      }
      ns += process.hrtime.bigint() - t0;
    }
  }
  process.stdout.write(JSON.stringify({ ns: Number(ns) }) + "\n");
}
await context.dispose();
await model.dispose();
