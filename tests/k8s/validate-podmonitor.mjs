// Validates PodMonitor objects (JSON on stdin: an array) offline, against the
// prometheus-operator API as packaged by @kubernetes-models/prometheus-operator (npm;
// installed by tests/tools/install.sh): its validate() checks types, required fields,
// enums and patterns (durations, ...) from the operator's Go API types. That schema lets
// unknown fields through, as the API server's pruning would silently drop them, so the
// field names of spec and of each podMetricsEndpoint are checked here too, against the
// properties the package's type declarations list (a typo fails, as with kubectl's
// --validate=strict). Usage: node validate-podmonitor.mjs NODE_MODULES_DIR < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const v1 = join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const { PodMonitor } = await import(pathToFileURL(join(v1, "PodMonitor.js")).href);

// Property names of the interface declared in v1/<name>.d.ts, with those of the
// interfaces it extends (imported from sibling files).
function properties(name) {
  const text = readFileSync(join(v1, `${name}.d.ts`), "utf8");
  const names = new Set([...text.matchAll(/^ {4}"?([A-Za-z0-9_$]+)"?\??:/gm)].map((m) => m[1]));
  const ext = text.match(/export interface I\w+ extends ([^{]+)\{/);
  for (const base of ext ? ext[1].split(",").map((s) => s.trim()) : []) {
    const imp = text.match(new RegExp(`import \\{ ${base} \\} from "\\./(\\w+)\\.js"`));
    if (imp) for (const n of properties(imp[1])) names.add(n);
  }
  if (names.size === 0) throw new Error(`no properties found in ${name}.d.ts`);
  return names;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
const unknown = (path, obj, allowed) => {
  for (const key of Object.keys(obj ?? {})) if (!allowed.has(key)) problems.push(`${path}.${key}: unknown field`);
};
for (const obj of objects) {
  const name = obj?.metadata?.name ?? "?";
  try {
    new PodMonitor(obj).validate();
  } catch (e) {
    problems.push(`podmonitor/${name}: ${e.message}`);
  }
  unknown(`podmonitor/${name}`, obj, new Set(["apiVersion", "kind", "metadata", "spec"]));
  unknown(`podmonitor/${name}.spec`, obj.spec, properties("PodMonitorSpec"));
  (obj.spec?.podMetricsEndpoints ?? []).forEach((ep, i) =>
    unknown(`podmonitor/${name}.spec.podMetricsEndpoints[${i}]`, ep, properties("PodMetricsEndpoint")),
  );
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`${objects.length} PodMonitor(s) valid`);
