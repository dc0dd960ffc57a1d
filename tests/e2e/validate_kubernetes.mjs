// Validates Kubernetes objects, a JSON array on standard input, with the `kubernetes-models` package's
// validate(): each object by the model of its apiVersion and kind, loaded from the package in the
// node_modules folder given as the first argument. Prints a line per object; exits 1 if any is invalid or
// has no model. Run by tests/e2e/test_kubernetes.py.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  // The package keeps a model per file: <group>/<version>/<Kind>.js, the core group's under v1/.
  const file = join(modules, "kubernetes-models", object.apiVersion, `${object.kind}.js`);
  let model;
  try {
    model = (await import(pathToFileURL(file).href))[object.kind];
  } catch {
    model = undefined;
  }
  if (!model) {
    console.log(`UNKNOWN ${name}: no model for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  try {
    new model(object).validate();
    console.log(`VALID ${name}`);
  } catch (error) {
    console.log(`INVALID ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
