// Checks that dist/ is exactly what `npm run build` makes from src/ (the
// host compiles dist/ in, so it must be reproducible from the source).
import { readFileSync } from "node:fs";
import { build } from "esbuild";

const out = await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "iife",
  target: "es2020",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  write: false,
  outfile: "dist/console.js",
});
const stale = [];
if (Buffer.compare(Buffer.from(out.outputFiles[0].contents), readFileSync("dist/console.js")) !== 0) stale.push("console.js");
for (const f of ["index.html", "console.css", "favicon.svg"]) {
  if (Buffer.compare(readFileSync(`src/${f}`), readFileSync(`dist/${f}`)) !== 0) stale.push(f);
}
if (stale.length) {
  console.error(`console/dist is not the build of console/src (${stale.join(", ")}): run \`npm run build\` in console/ and commit dist/`);
  process.exit(1);
}
console.log("console/dist is the build of console/src");
