// llama.cpp's tokenizer (through node-llama-cpp, vocabulary only) as the
// reference for forge-model's GGUF tokenizers. Usage:
// node llama_cpp_tokenize.mjs REQUEST.json RESPONSE.json, with the current
// directory (or FORGE_NODE_LLAMA_CPP_DIR) holding node_modules/node-llama-cpp.
//
// REQUEST: {"vocabs": [{"model": path, "texts": ["text", ...]}, ...]}
// RESPONSE: {"version", "results": [{
//     "plain":   [[id, ...], ...],  // llama_tokenize(add_special = false, parse_special = false)
//     "special": [[id, ...], ...],  // llama_tokenize(add_special = false, parse_special = true)
//     "detok":   ["text", ...]      // llama_detokenize(special ids, remove_special = false, unparse_special = true)
//   }, ...]}
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
const out = { version: `node-llama-cpp ${version}`, results: [] };
for (const vocab of req.vocabs) {
  const model = await llama.loadModel({ modelPath: vocab.model, gpuLayers: 0, vocabOnly: true });
  const result = { plain: [], special: [], detok: [] };
  for (const text of vocab.texts) {
    result.plain.push(Array.from(model.tokenize(text, false)));
    const special = model.tokenize(text, true);
    result.special.push(Array.from(special));
    result.detok.push(model.detokenize(special, true));
  }
  out.results.push(result);
  await model.dispose();
}
writeFileSync(responsePath, JSON.stringify(out));
