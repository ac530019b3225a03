// Copies the repository's proto/ into the package before `npm pack`, so a
// published package carries the contract it was built from. In the
// repository itself the client reads ../../proto directly.
import { cpSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const source = fileURLToPath(new URL("../../../proto/", import.meta.url));
const target = fileURLToPath(new URL("../proto/", import.meta.url));
rmSync(target, { recursive: true, force: true });
cpSync(source, target, { recursive: true, filter: (path) => !path.endsWith(".yaml") });
console.log(`copied ${source} -> ${target}`);
