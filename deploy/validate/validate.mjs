// Checks rendered Kubernetes manifests (the output of `kubectl kustomize`) without a
// cluster: every object against its API schema, with unknown fields refused the way the
// API server's strict field validation refuses them, then the cross-object facts no
// schema knows (selectors that match, ports that exist, names the gateway resolves,
// grace periods that outlast the drain, TLS that both ends of a connection agree on, a
// NetworkPolicy that lets only the gateways reach the workers...).
//
// Usage: node validate.mjs [FILE.yaml...] [--schema-only FILE.yaml...]
//   Each file before --schema-only is one build of an overlay (its name labels errors) and
//   gets every check; files after it are objects applied on their own (deploy/prometheus's),
//   checked against their schemas only.
// With DEEPLAB_GATEWAY_BINARY and DEEPLAB_WORKER_BINARY set, the flags in the containers'
// args are also checked against what those binaries accept.
// Exit status: 0 all valid, 1 something is wrong (every problem is printed), 2 usage.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

// Where the model class of an apiVersion lives: Kubernetes' own first, then the CRDs we use.
const MODEL_PACKAGES = [
  "kubernetes-models",
  "@kubernetes-models/prometheus-operator",
  "@kubernetes-models/keda",
];

async function modelClass(apiVersion, kind) {
  for (const pkg of MODEL_PACKAGES) {
    let module;
    try {
      module = await import(`${pkg}/${apiVersion}`);
    } catch (e) {
      if (e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED" || e.code === "ERR_MODULE_NOT_FOUND") continue;
      throw e;
    }
    if (typeof module[kind] === "function") return module[kind];
  }
  return null;
}

// Wraps `value` so that every own property the validator reads is recorded. The schemas
// describe every known field but do not forbid others, so a typo such as `imagePullPolcy`
// passes them; a field the validator never looked at is one the schema does not know.
function track(value, path, visits) {
  if (value === null || typeof value !== "object") return value;
  const visit = { path, keys: Array.isArray(value) ? [] : Object.keys(value), read: new Set() };
  visits.push(visit);
  const children = new Map();
  return new Proxy(value, {
    get(target, prop, receiver) {
      if (typeof prop === "string" && Object.prototype.hasOwnProperty.call(target, prop)) {
        visit.read.add(prop);
        if (!children.has(prop)) {
          const childPath = Array.isArray(target) ? `${path}[${prop}]` : `${path}.${prop}`;
          children.set(prop, track(target[prop], childPath, visits));
        }
        return children.get(prop);
      }
      return Reflect.get(target, prop, receiver);
    },
  });
}

function schemaProblems(cls, object) {
  const visits = [];
  try {
    cls.prototype.validate.call(track(object, "", visits));
  } catch (e) {
    const details = (e.errors ?? [])
      .map((err) => `${err.instancePath || "/"} ${err.message ?? err.keyword}`)
      .join("; ");
    return [`schema: ${details || e.message}`];
  }
  const unknown = [];
  for (const visit of visits) {
    for (const key of visit.keys) {
      if (!visit.read.has(key)) unknown.push(`${visit.path}.${key}`.replace(/^\./, ""));
    }
  }
  return unknown.map((field) => `unknown field ${field}`);
}

// --- helpers for the semantic checks --------------------------------------------------

const id = (o) => `${o.kind}/${o.metadata?.name}`;

function matches(selector, labels) {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function selectorOf(o) {
  return o.spec?.selector?.matchLabels ?? o.spec?.selector ?? {};
}

// A metav1.LabelSelector as the API server reads it: {} selects everything.
function labelSelectorMatches(selector, labels) {
  const have = labels ?? {};
  if (!Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => have[k] === v)) return false;
  return (selector?.matchExpressions ?? []).every(({ key, operator, values }) => {
    switch (operator) {
      case "In": return key in have && (values ?? []).includes(have[key]);
      case "NotIn": return !(key in have) || !(values ?? []).includes(have[key]);
      case "Exists": return key in have;
      case "DoesNotExist": return !(key in have);
      default: return false;
    }
  });
}

// Go-style durations as absl prints and parses them: 60s, 1m30s, 500ms, 1h.
function seconds(text) {
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = "";
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
    consumed += m[0];
  }
  return consumed === text && text !== "" ? total : NaN;
}

// The value of --name=VALUE in args; the last one, as absl takes it.
function flag(args, name) {
  let value;
  for (const arg of args ?? []) {
    for (const spelling of [name, name.replaceAll("-", "_")]) {
      if (arg.startsWith(`--${spelling}=`)) value = arg.slice(spelling.length + 3);
    }
  }
  return value;
}

function allContainers(pod) {
  return [...(pod.initContainers ?? []), ...(pod.containers ?? [])];
}

// The deeplab binary a container runs: its command, else its image (whose entrypoint is
// the binary); init containers run scripts, so they have none.
function binaryOf(pod, container) {
  if ((pod.initContainers ?? []).includes(container)) return null;
  const command = (container.command ?? [])[0]?.split("/").pop();
  if (command === "deeplab-gateway") return "gateway";
  if (command === "deeplab-worker") return "worker";
  if (command !== undefined) return null;
  const image = container.image ?? "";
  if (/(^|\/)deeplab-gateway([:@]|$)/.test(image)) return "gateway";
  if (/(^|\/)deeplab-worker(-cuda)?([:@]|$)/.test(image)) return "worker";
  return null;
}

// Flag names each program accepts, dashes as underscores (absl takes either spelling).
function abslFlags(binary) {
  if (!binary) return null;
  const help = spawnSync(binary, ["--helpfull"], { encoding: "utf8" });  // exits 1 by design
  const names = [...(help.stdout ?? "").matchAll(/^\s+--([a-z0-9_]+) \(/gm)].map((m) => m[1]);
  if (names.length === 0) throw new Error(`${binary} --helpfull lists no flags: ${help.stderr}`);
  return new Set(names);
}
function scriptFlags(script) {
  const help = spawnSync("bash", [script, "--help"], { encoding: "utf8" });
  if (help.status !== 0) throw new Error(`${script} --help failed: ${help.stderr}`);
  return new Set([...help.stdout.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1].replaceAll("-", "_")));
}
const PREPARE_MODELS = fileURLToPath(new URL("../../scripts/prepare_models.sh", import.meta.url));
const KNOWN_FLAGS = {
  gateway: abslFlags(process.env.DEEPLAB_GATEWAY_BINARY),
  worker: abslFlags(process.env.DEEPLAB_WORKER_BINARY),
  "prepare_models.sh": scriptFlags(PREPARE_MODELS),
};

// The images' ENTRYPOINTs (deploy/docker), by image name: what a container without a
// `command` runs, its args appended.
function imageEntrypoints() {
  const out = {};
  const files = [
    ["Dockerfile", { gateway: "deeplab-gateway", worker: "deeplab-worker" }],
    ["Dockerfile.cuda", { worker: "deeplab-worker-cuda" }],
  ];
  for (const [file, images] of files) {
    let text;
    try {
      text = readFileSync(fileURLToPath(new URL(`../docker/${file}`, import.meta.url)), "utf8");
    } catch {
      continue;
    }
    let stage = null;
    for (const line of text.split("\n")) {
      const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?/i.exec(line);
      if (from) stage = from[1] ?? null;
      const entrypoint = /^ENTRYPOINT\s+(\[.*\])\s*$/.exec(line);
      if (entrypoint && images[stage]) out[images[stage]] = JSON.parse(entrypoint[1]);
    }
  }
  return out;
}
const ENTRYPOINTS = imageEntrypoints();
const imageName = (image) => (image ?? "").split("/").pop().split(/[:@]/)[0];

// What the deployment's Secrets must be documented in: how to create each, what each key holds.
const README_PATH = fileURLToPath(new URL("../k8s/README.md", import.meta.url));
let README = null;
try {
  README = readFileSync(README_PATH, "utf8");
} catch {}

function programOf(pod, container) {
  if ((container.command ?? []).some((word) => word.endsWith("/prepare_models.sh"))) return "prepare_models.sh";
  return binaryOf(pod, container);
}

const DEFAULT_PORTS = { gateway: { grpc: 8000, metrics: 9100 }, worker: { grpc: 8001, metrics: 9101 } };
const DEFAULT_DRAIN_SECONDS = 60;
// The servers' --host default; in a pod only every interface is reachable from outside it.
const DEFAULT_HOST = "127.0.0.1";
const ALL_INTERFACES = ["0.0.0.0", "::", "[::]"];
// Flags naming files the servers read (certificates, keys, tokens).
const FILE_FLAGS = ["tls-cert", "tls-key", "tls-client-ca", "worker-tls-ca", "worker-tls-cert", "worker-tls-key", "tokens-file"];
// [a, b]: --a needs --b.
const FLAG_NEEDS = [
  ["tls-cert", "tls-key"], ["tls-key", "tls-cert"], ["tls-client-ca", "tls-cert"],
  ["worker-tls-cert", "worker-tls-key"], ["worker-tls-key", "worker-tls-cert"],
  ["worker-tls-cert", "worker-tls-ca"], ["worker-tls-server-name", "worker-tls-ca"],
];
const PROBE_HANDLERS = ["exec", "httpGet", "tcpSocket", "grpc"];
const VOLUME_SOURCES = [
  "emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected", "hostPath",
  "downwardAPI", "ephemeral", "csi", "nfs", "image",
];

function semanticProblems(objects) {
  const problems = [];
  const report = (o, text) => problems.push(`${id(o)}: ${text}`);
  const ofKind = (kind) => objects.filter((o) => o.kind === kind);
  const named = (kind, name) => objects.find((o) => o.kind === kind && o.metadata?.name === name);
  const deployments = ofKind("Deployment");
  // Each container's command line, command (or the image's entrypoint) and args, with
  // $(VAR) replaced: the gateway's checks below read the workers'.
  const commandLines = new Map();
  const given = (args, name) => {
    const value = flag(args, name);
    return value === "" ? undefined : value;
  };
  // Secrets the pods read: name -> {keys, users}, for the README check at the end.
  const secretsRead = new Map();
  const readsSecret = (name, key, user) => {
    if (!secretsRead.has(name)) secretsRead.set(name, { keys: new Set(), users: new Set() });
    if (key !== undefined) secretsRead.get(name).keys.add(key);
    secretsRead.get(name).users.add(user);
  };
  for (const o of objects) {
    if (o.kind === "Secret" && (o.data || o.stringData)) {
      report(o, "holds keys: keep them out of the repository and create the Secret in the cluster (deploy/k8s/README.md)");
    }
  }

  // Names are unique per kind, and every namespaced object is in the overlay's namespace.
  const seen = new Set();
  for (const o of objects) {
    const key = `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;
    if (seen.has(key)) report(o, "defined twice");
    seen.add(key);
  }
  const namespaces = ofKind("Namespace").map((n) => n.metadata.name);
  if (namespaces.length !== 1) {
    problems.push(`expected one Namespace object, found ${namespaces.length}`);
  }
  for (const o of objects) {
    if (o.kind === "Namespace") continue;
    if (o.metadata?.namespace !== namespaces[0]) {
      report(o, `namespace '${o.metadata?.namespace ?? ""}' is not the overlay's '${namespaces[0]}'`);
    }
  }

  // Pod templates: volumes, mounts, ConfigMap references, ports, probes, security, shutdown.
  for (const d of deployments) {
    const labels = d.spec.template.metadata?.labels ?? {};
    if (!matches(d.spec.selector?.matchLabels, labels)) {
      report(d, "spec.selector does not match its own pod template labels");
    }
    const pod = d.spec.template.spec;
    const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    for (const v of pod.volumes ?? []) {
      const sources = VOLUME_SOURCES.filter((s) => v[s] !== undefined && v[s] !== null);
      if (sources.length !== 1) {
        report(d, `volume ${v.name} has ${sources.length} sources (${sources.join(", ")}); it needs exactly one`);
      }
      if (v.configMap) {
        const cm = named("ConfigMap", v.configMap.name);
        if (!cm) report(d, `volume ${v.name}: no ConfigMap ${v.configMap.name}`);
        for (const item of v.configMap.items ?? []) {
          if (cm && !(item.key in (cm.data ?? {}))) {
            report(d, `volume ${v.name}: ConfigMap ${v.configMap.name} has no key ${item.key}`);
          }
        }
      }
      if (v.persistentVolumeClaim && !named("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
        report(d, `volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
      }
      for (const secret of [v.secret, ...(v.projected?.sources ?? []).map((source) => source.secret)]) {
        if (!secret) continue;
        const name = secret.secretName ?? secret.name;
        readsSecret(name, undefined, `${id(d)} volume ${v.name}`);
        for (const item of secret.items ?? []) readsSecret(name, item.key, `${id(d)} volume ${v.name}`);
      }
    }
    const podSecurity = pod.securityContext ?? {};
    for (const c of allContainers(pod)) {
      const where = `container ${c.name}`;
      // Environment: values a container reads from ConfigMaps, and $(VAR) in its args.
      const env = new Map();
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.configMapKeyRef;
        const field = e.valueFrom?.fieldRef?.fieldPath;
        const secretRef = e.valueFrom?.secretKeyRef;
        if (ref) {
          const cm = named("ConfigMap", ref.name);
          if (!cm) report(d, `${where}: env ${e.name}: no ConfigMap ${ref.name}`);
          else if (!(ref.key in (cm.data ?? {}))) report(d, `${where}: env ${e.name}: ConfigMap ${ref.name} has no key ${ref.key}`);
          else env.set(e.name, cm.data[ref.key]);
        } else if (field !== undefined) {
          env.set(e.name, field === "metadata.namespace" ? d.metadata.namespace : `<${field}>`);
        } else if (secretRef) {
          readsSecret(secretRef.name, secretRef.key, `${id(d)} ${where} env ${e.name}`);
          env.set(e.name, `<Secret ${secretRef.name}>`);
        } else if (e.value !== undefined) {
          env.set(e.name, e.value);
        }
      }
      for (const from of c.envFrom ?? []) {
        if (from.secretRef) readsSecret(from.secretRef.name, undefined, `${id(d)} ${where} envFrom`);
      }
      // The command line as the kubelet starts it: `command` replaces the image's
      // entrypoint (and the flags in it), args follow.
      const binary = binaryOf(pod, c);
      const entry = c.command ?? (binary ? ENTRYPOINTS[imageName(c.image)] : undefined) ?? [];
      const args = [...entry.slice(1), ...(c.args ?? [])].map((a) =>
        a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name) => {
          if (!env.has(name)) report(d, `${where}: ${a} refers to $(${name}), which it does not define`);
          return env.get(name) ?? whole;
        }),
      );
      commandLines.set(c, args);
      const program = programOf(pod, c);
      if (program && KNOWN_FLAGS[program]) {
        for (const arg of [...(c.command ?? []).slice(1), ...(c.args ?? [])]) {
          const name = /^--([^=]+)/.exec(arg)?.[1];
          if (name && !KNOWN_FLAGS[program].has(name.replaceAll("-", "_"))) {
            report(d, `${where}: ${program} has no flag --${name}`);
          }
        }
      }
      const mounts = new Map();
      for (const m of c.volumeMounts ?? []) {
        if (!volumes.has(m.name)) report(d, `${where}: mounts volume ${m.name}, which the pod does not define`);
        mounts.set(m.mountPath, m);
      }
      // The security posture of the Pod Security "restricted" level, per container.
      const sc = c.securityContext ?? {};
      if ((sc.runAsNonRoot ?? podSecurity.runAsNonRoot) !== true) report(d, `${where}: runAsNonRoot is not set`);
      if (sc.allowPrivilegeEscalation !== false) report(d, `${where}: allowPrivilegeEscalation is not false`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) report(d, `${where}: capabilities are not dropped (drop: [ALL])`);
      if (sc.readOnlyRootFilesystem !== true) report(d, `${where}: readOnlyRootFilesystem is not true`);
      if (sc.readOnlyRootFilesystem === true && !mounts.has("/tmp")) {
        report(d, `${where}: read-only root file system without a /tmp volume`);
      }

      // Our binaries: TLS flags come in working sets, and every file they name is in a
      // volume the process can read and the kubelet keeps up to date.
      const tlsPort = binary !== null && given(args, "tls-cert") !== undefined;
      if (binary) {
        for (const [a, b] of FLAG_NEEDS) {
          if (given(args, a) !== undefined && given(args, b) === undefined) report(d, `${where}: --${a} without --${b}`);
        }
        if (given(args, "tokens-file") !== undefined && !tlsPort) {
          report(d, `${where}: --tokens-file on a plaintext gRPC port (no --tls-cert): every bearer token would cross the network readable`);
        }
        for (const name of FILE_FLAGS) {
          const path = given(args, name);
          if (path === undefined) continue;
          const mount = [...mounts.values()]
            .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, "")}/`))
            .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
          if (!mount) { report(d, `${where}: --${name}=${path} is not in a mounted volume`); continue; }
          if (mount.subPath || mount.subPathExpr) {
            report(d, `${where}: --${name}: volume ${mount.name} is mounted with subPath, whose files the kubelet never updates: a renewed Secret would not reach the process`);
          }
          const secret = volumes.get(mount.name)?.secret;
          if (!secret) continue;
          const file = path.slice(mount.mountPath.replace(/\/$/, "").length + 1);
          const item = (secret.items ?? []).find((i) => i.path === file);
          if (secret.items && !item) { report(d, `${where}: --${name}=${path}: volume ${mount.name} has no item ${file}`); continue; }
          readsSecret(secret.secretName, item?.key ?? file, `${id(d)} ${where} --${name}`);
          // Secret files belong to root, and to the fsGroup when the pod has one.
          const mode = item?.mode ?? secret.defaultMode ?? 0o644;
          const uid = sc.runAsUser ?? podSecurity.runAsUser;
          const readable = uid === 0 || (mode & 0o004) !== 0 || ((mode & 0o040) !== 0 && podSecurity.fsGroup !== undefined);
          if (!readable) {
            report(d, `${where}: --${name}=${path} is mode 0${mode.toString(8)} in volume ${mount.name} with no fsGroup: user ${uid} cannot read it`);
          }
        }
      }

      // Probes: one handler each, on ports the container declares (a grpc probe takes a
      // number), and none the kubelet cannot speak.
      const ports = c.ports ?? [];
      const portExists = (p) => ports.some((cp) => cp.containerPort === p || cp.name === p);
      const grpcPort = binary && Number(flag(args, "port") ?? DEFAULT_PORTS[binary].grpc);
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = c[kind];
        if (!probe) continue;
        const handlers = PROBE_HANDLERS.filter((h) => probe[h] !== undefined && probe[h] !== null);
        if (handlers.length !== 1) {
          report(d, `${where}: ${kind} has ${handlers.length} handlers (${handlers.join(", ")}); it needs exactly one`);
        }
        const port = probe.grpc?.port ?? probe.tcpSocket?.port ?? probe.httpGet?.port;
        if (port !== undefined && !portExists(port)) report(d, `${where}: ${kind} port ${port} is not a container port`);
        if (probe.grpc && tlsPort && probe.grpc.port === grpcPort) {
          report(d, `${where}: ${kind} is a grpc probe on port ${grpcPort}, which speaks TLS only (--tls-cert): the kubelet's gRPC probe does not do TLS and would never pass`);
        }
        const command = (probe.exec?.command ?? []).join(" ");
        for (const m of command.matchAll(/(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)/g)) {
          if (!portExists(Number(m[1]))) report(d, `${where}: ${kind} reads port ${m[1]}, which is not a container port`);
        }
      }

      // Our binaries: they listen where the kubelet, Services and Prometheus reach them
      // (the pod IP), on the ports declared, and they get the time they need to drain.
      if (binary) {
        // --metrics-host defaults to --host.
        const host = flag(args, "host") ?? DEFAULT_HOST;
        const why = c.command && flag(args, "host") === undefined
          ? " (its `command` replaces the image's entrypoint, --host=0.0.0.0 included)" : "";
        for (const [name, value] of [["host", host], ["metrics-host", given(args, "metrics-host") ?? host]]) {
          if (!ALL_INTERFACES.includes(value) && (name === "host" || value !== host)) {
            report(d, `${where}: listens on ${value} (--${name})${name === "host" ? why : ""}: probes, Services and Prometheus reach the pod IP, so it must be 0.0.0.0`);
          }
        }
        for (const [portName, flagName] of [["grpc", "port"], ["metrics", "metrics-port"]]) {
          const listens = Number(flag(args, flagName) ?? DEFAULT_PORTS[binary][portName]);
          const declared = ports.find((p) => p.name === portName);
          if (!declared) report(d, `${where}: no container port named ${portName}`);
          else if (declared.containerPort !== listens) {
            report(d, `${where}: port ${portName} is ${declared.containerPort} but --${flagName} is ${listens}`);
          }
        }
        const drain = flag(args, "drain-timeout");
        const drainSeconds = drain === undefined ? DEFAULT_DRAIN_SECONDS : seconds(drain);
        if (Number.isNaN(drainSeconds)) report(d, `${where}: cannot read --drain-timeout=${drain}`);
        const preStop = c.lifecycle?.preStop;
        let sleepSeconds = preStop?.sleep?.seconds ?? 0;
        const exec = preStop?.exec?.command ?? [];
        if (exec[0] === "sleep" || exec[0] === "/bin/sleep") sleepSeconds = Number(exec[1]);
        const grace = pod.terminationGracePeriodSeconds ?? 30;
        if (!(grace > drainSeconds + sleepSeconds)) {
          report(d, `${where}: terminationGracePeriodSeconds ${grace} does not exceed --drain-timeout ` +
            `(${drainSeconds}s) + preStop sleep (${sleepSeconds}s): the kubelet would kill it mid-drain`);
        }
      }

      // The worker's model repository: --models is a mounted volume, and every weight set
      // in --load has a config in the ConfigMap the init container copies from.
      if (binary === "worker") {
        const models = flag(args, "models") ?? "models";
        if (!mounts.has(models)) report(d, `${where}: --models=${models} is not a mounted volume`);
      }
      const configsPath = flag(args, "configs");
      const load = flag(args, "load");
      if (configsPath !== undefined && load !== undefined) {
        const mount = mounts.get(configsPath);
        const cmName = mount && volumes.get(mount.name)?.configMap?.name;
        const cm = cmName && named("ConfigMap", cmName);
        if (!cm) {
          report(d, `${where}: --configs=${configsPath} is not a mounted ConfigMap`);
        } else {
          const known = Object.keys(cm.data ?? {})
            .filter((k) => k.endsWith(".config.pbtxt"))
            .map((k) => k.slice(0, -".config.pbtxt".length));
          for (const name of load === "" ? [] : load.split(",")) {
            if (!known.includes(name)) {
              report(d, `${where}: --load names '${name}', which has no ${name}.config.pbtxt in ConfigMap ${cmName} (there: ${known.join(", ")})`);
            }
          }
        }
      }
    }
  }

  // Services and PodDisruptionBudgets select pods that exist, on ports those pods have.
  const podsOf = (selector) => deployments.filter((d) => matches(selector, d.spec.template.metadata?.labels));
  const containerPorts = (d) => (d.spec.template.spec.containers ?? []).flatMap((c) => c.ports ?? []);
  for (const s of ofKind("Service")) {
    const targets = podsOf(s.spec.selector);
    if (targets.length === 0) {
      report(s, `selector ${JSON.stringify(s.spec.selector)} matches no Deployment's pods`);
      continue;
    }
    for (const p of s.spec.ports ?? []) {
      const target = p.targetPort ?? p.port;
      for (const d of targets) {
        if (!containerPorts(d).some((cp) => cp.name === target || cp.containerPort === target)) {
          report(s, `port ${p.name ?? p.port}: targetPort ${target} is not a container port of ${id(d)}`);
        }
      }
    }
  }
  for (const pdb of ofKind("PodDisruptionBudget")) {
    if (podsOf(selectorOf(pdb)).length === 0) report(pdb, "selector matches no Deployment's pods");
  }

  // NetworkPolicies select pods that exist, on ports those pods have.
  const podLabels = (d) => d.spec.template.metadata?.labels ?? {};
  const namespaceLabels = (name) => ({
    ...(named("Namespace", name)?.metadata?.labels ?? {}),
    "kubernetes.io/metadata.name": name,
  });
  const policies = ofKind("NetworkPolicy");
  for (const np of policies) {
    const selected = deployments.filter((d) => labelSelectorMatches(np.spec.podSelector, podLabels(d)));
    if (selected.length === 0) report(np, "podSelector matches no Deployment's pods");
    for (const [i, rule] of (np.spec.ingress ?? []).entries()) {
      for (const p of rule.ports ?? []) {
        for (const d of selected) {
          if (p.port !== undefined && !containerPorts(d).some((cp) => cp.name === p.port || cp.containerPort === p.port)) {
            report(np, `ingress rule ${i}: port ${p.port} is not a container port of ${id(d)}`);
          }
        }
      }
      for (const peer of rule.from ?? []) {
        if (peer.podSelector && !peer.namespaceSelector &&
            !deployments.some((d) => labelSelectorMatches(peer.podSelector, podLabels(d)))) {
          report(np, `ingress rule ${i}: from podSelector ${JSON.stringify(peer.podSelector)} matches no Deployment's pods`);
        }
      }
    }
  }

  // The workers `gateway` dials on `port`: some NetworkPolicy lets the gateway's pods, and
  // only them, reach that port, and Prometheus reach the metrics port.
  function networkPolicyProblems(gateway, worker, port) {
    const ns = worker.metadata.namespace;
    const ingress = policies.filter((np) =>
      (np.spec.policyTypes ?? ["Ingress"]).includes("Ingress") && labelSelectorMatches(np.spec.podSelector, podLabels(worker)));
    const grpc = containerPorts(worker).find((p) => p.containerPort === port);
    const metrics = containerPorts(worker).find((p) => p.name === "metrics");
    if (ingress.length === 0) {
      report(worker, `no NetworkPolicy limits who reaches its gRPC port ${port}: only the gateways should (base/network-policy.yaml)`);
      return;
    }
    const rules = ingress.flatMap((np) => (np.spec.ingress ?? []).map((rule, i) => ({ np, rule, i })));
    const covers = (rule, cp) => cp !== undefined && ((rule.ports ?? []).length === 0 || rule.ports.some((p) =>
      (p.protocol ?? "TCP") === "TCP" && (p.port === undefined || p.port === cp.name || p.port === cp.containerPort ||
        (p.endPort !== undefined && cp.containerPort >= p.port && cp.containerPort <= p.endPort))));
    // Does peer admit pods with these labels in this namespace? (A peer with no
    // namespaceSelector means the policy's own namespace.)
    const admits = (peer, labels) => !peer.ipBlock &&
      (peer.namespaceSelector === undefined || labelSelectorMatches(peer.namespaceSelector, namespaceLabels(ns))) &&
      (peer.podSelector === undefined || labelSelectorMatches(peer.podSelector, labels));
    // Only gateway pods of this namespace: a podSelector that no other Deployment matches.
    const gatewayOnly = (peer) => !peer.ipBlock && peer.podSelector !== undefined &&
      (peer.namespaceSelector === undefined ||
        (Object.keys(peer.namespaceSelector.matchLabels ?? {}).join() === "kubernetes.io/metadata.name" &&
          peer.namespaceSelector.matchLabels["kubernetes.io/metadata.name"] === ns)) &&
      Object.keys(peer.podSelector.matchLabels ?? {}).length > 0 &&
      labelSelectorMatches(peer.podSelector, podLabels(gateway)) &&
      deployments.every((d) => d === gateway || !labelSelectorMatches(peer.podSelector, podLabels(d)));
    const reaching = rules.filter(({ rule }) => covers(rule, grpc));
    if (!reaching.some(({ rule }) => (rule.from ?? []).length === 0 || rule.from.some((peer) => admits(peer, podLabels(gateway))))) {
      report(worker, `no ingress rule of ${ingress.map(id).join(", ")} lets the pods of ${id(gateway)} reach its gRPC port ${port}: every batch would time out`);
    }
    for (const { np, rule, i } of reaching) {
      if ((rule.from ?? []).length === 0 || !rule.from.every(gatewayOnly)) {
        report(np, `ingress rule ${i} lets more than the pods of ${id(gateway)} reach the workers' gRPC port ${port}`);
      }
    }
    if (metrics && !rules.some(({ rule }) => covers(rule, metrics))) {
      report(worker, `no ingress rule of ${ingress.map(id).join(", ")} lets Prometheus reach its metrics port ${metrics.containerPort}`);
    }
  }

  // The gateway resolves the workers through a headless Service of that name and port.
  for (const d of deployments) {
    for (const c of d.spec.template.spec.containers ?? []) {
      if (binaryOf(d.spec.template.spec, c) !== "gateway") continue;
      const gatewayArgs = commandLines.get(c) ?? [];
      const workers = flag(gatewayArgs, "workers");
      if (workers === undefined) { report(d, `container ${c.name}: no --workers`); continue; }
      const m = /^dns:\/\/\/([^:/]+):(\d+)$/.exec(workers);
      if (!m) { report(d, `container ${c.name}: --workers=${workers} is not dns:///NAME:PORT`); continue; }
      // A short name, or NAME.NAMESPACE[.svc...] of this namespace.
      const [service, ns] = m[1].split(".");
      if (ns !== undefined && ns !== d.metadata.namespace) {
        report(d, `container ${c.name}: --workers names namespace ${ns}, not its own ${d.metadata.namespace}`);
      }
      const s = named("Service", service);
      if (!s) { report(d, `container ${c.name}: --workers names Service ${service}, which does not exist`); continue; }
      if (s.spec.clusterIP !== "None") report(s, "the gateway resolves it for every worker: it must be headless (clusterIP: None)");
      if (s.spec.publishNotReadyAddresses === true) report(s, "publishes pods that are not ready: the gateway would send batches to loading or draining workers");
      const port = s.spec.ports?.find((p) => p.port === Number(m[2]));
      if (!port) { report(d, `container ${c.name}: --workers port ${m[2]} is not a port of Service ${service}`); continue; }
      // Headless: DNS gives pod addresses, so the port the gateway dials is the pod's own.
      for (const w of podsOf(s.spec.selector)) {
        const cp = containerPorts(w).find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
        if (cp && cp.containerPort !== Number(m[2])) {
          report(d, `container ${c.name}: --workers dials port ${m[2]} but ${id(w)} listens on ${cp.containerPort}`);
        }
        // Both ends agree on TLS, and the gateway checks the workers' certificate against
        // a name it carries (it dials pod IPs, which no certificate names).
        for (const wc of w.spec.template.spec.containers ?? []) {
          if (binaryOf(w.spec.template.spec, wc) !== "worker") continue;
          const workerArgs = commandLines.get(wc) ?? [];
          const workerTls = given(workerArgs, "tls-cert") !== undefined;
          const gatewayTls = given(gatewayArgs, "worker-tls-ca") !== undefined;
          if (workerTls && !gatewayTls) {
            report(d, `container ${c.name}: ${id(w)} speaks TLS (--tls-cert) but the gateway dials it in plaintext (no --worker-tls-ca)`);
          }
          if (!workerTls && gatewayTls) {
            report(d, `container ${c.name}: dials the workers with TLS (--worker-tls-ca) but ${id(w)} serves plaintext (no --tls-cert)`);
          }
          if (given(workerArgs, "tls-client-ca") !== undefined && given(gatewayArgs, "worker-tls-cert") === undefined) {
            report(d, `container ${c.name}: ${id(w)} requires a client certificate (--tls-client-ca) but the gateway has no --worker-tls-cert`);
          }
          if (!workerTls || !gatewayTls) continue;
          const serverName = given(gatewayArgs, "worker-tls-server-name");
          const ns = d.metadata.namespace;
          const labels = (serverName ?? "").split(".");
          const names = labels[0] === service && (labels.length === 1 ||
            (labels[1] === ns && (labels.length === 2 || labels[2] === "svc")));
          if (serverName === undefined) {
            report(d, `container ${c.name}: no --worker-tls-server-name: the gateway dials each worker's pod IP, which the workers' certificate does not name`);
          } else if (!names) {
            report(d, `container ${c.name}: --worker-tls-server-name=${serverName} is not a DNS name of Service ${service} in namespace ${ns} (${service}.${ns}.svc)`);
          }
        }
        // Only the gateways reach the workers' gRPC port; Prometheus reaches their metrics.
        networkPolicyProblems(d, w, Number(m[2]));
      }
    }
  }

  // Every Secret the pods read is in deploy/k8s/README.md (what it holds, how to create
  // it), with its keys: the repository never holds the keys themselves.
  for (const [name, { keys, users }] of secretsRead) {
    const where = `read by ${[...users][0]}`;
    if (README === null) {
      problems.push(`Secret/${name}: ${README_PATH} is missing, where it should be documented`);
    } else if (!README.includes(`\`${name}\``)) {
      problems.push(`Secret/${name} (${where}) is not documented in deploy/k8s/README.md: say what it holds and how to create it`);
    } else {
      for (const key of keys) {
        if (!README.includes(key)) problems.push(`Secret/${name}: key ${key} (${where}) is not mentioned in deploy/k8s/README.md`);
      }
    }
  }

  // Autoscalers: each targets a Deployment, and no Deployment has two.
  const scaled = new Map();
  const scaleTarget = (o, ref) => {
    const target = ref && deployments.find((d) => d.metadata.name === ref.name && (ref.kind ?? "Deployment") === "Deployment");
    if (!target) { report(o, `scale target ${ref?.kind ?? "Deployment"}/${ref?.name} does not exist`); return; }
    if (scaled.has(ref.name)) report(o, `Deployment/${ref.name} is already scaled by ${scaled.get(ref.name)}: they would fight`);
    scaled.set(ref.name, id(o));
    if (target.spec.replicas !== undefined) {
      report(target, `sets replicas (${target.spec.replicas}) while ${id(o)} scales it: every apply would reset the count`);
    }
  };
  for (const hpa of ofKind("HorizontalPodAutoscaler")) {
    scaleTarget(hpa, hpa.spec.scaleTargetRef);
    if ((hpa.spec.minReplicas ?? 1) > hpa.spec.maxReplicas) report(hpa, "minReplicas exceeds maxReplicas");
  }
  for (const so of ofKind("ScaledObject")) {
    scaleTarget(so, so.spec.scaleTargetRef);
    if ((so.spec.minReplicaCount ?? 0) > (so.spec.maxReplicaCount ?? 100)) report(so, "minReplicaCount exceeds maxReplicaCount");
    for (const t of so.spec.triggers ?? []) {
      // Trigger metadata is a free-form map to the schema: a misspelt key is only ignored.
      if (t.type === "prometheus") {
        for (const key of ["serverAddress", "query", "threshold"]) {
          if (!t.metadata?.[key]) report(so, `prometheus trigger has no metadata.${key}`);
        }
      }
      const q = t.metadata?.query ?? "";
      const ns = /namespace="([^"]*)"/.exec(q)?.[1];
      if (t.type === "prometheus" && ns !== so.metadata.namespace) {
        report(so, `query ${q} reads namespace '${ns ?? "(any)"}', not its own '${so.metadata.namespace}'`);
      }
    }
  }
  for (const d of deployments) {
    if (d.metadata.name === "deeplab-worker" && !scaled.has(d.metadata.name)) report(d, "no autoscaler targets it");
  }

  // ServiceMonitors select a Service that has the port they scrape.
  for (const sm of ofKind("ServiceMonitor")) {
    const services = ofKind("Service").filter((s) => matches(selectorOf(sm), s.metadata.labels));
    if (services.length === 0) report(sm, "selector matches no Service");
    for (const e of sm.spec.endpoints ?? []) {
      for (const s of services) {
        if (!s.spec.ports?.some((p) => p.name === e.port)) report(sm, `${id(s)} has no port named ${e.port}`);
      }
    }
  }
  return problems;
}

// --- main ---------------------------------------------------------------------------

const argv = process.argv.slice(2);
const split = argv.includes("--schema-only") ? argv.indexOf("--schema-only") : argv.length;
const files = argv.slice(0, split);
const schemaOnly = new Set(argv.slice(split + 1));
files.push(...schemaOnly);
if (files.length === 0) {
  console.error("usage: node validate.mjs [FILE.yaml...] [--schema-only FILE.yaml...]");
  process.exit(2);
}
let failed = 0;
const unchecked = ["gateway", "worker"].filter((b) => !KNOWN_FLAGS[b]);
if (unchecked.length > 0) {
  console.log(`note: flags of ${unchecked.join(" and ")} not checked (no binary given)`);
}
for (const file of files) {
  const build = schemaOnly.has(file) ? file : basename(file).replace(/\.ya?ml$/, "");
  const problems = [];
  const objects = [];
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length > 0) {
      problems.push(`YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const o = doc.toJS();
    if (o === null || o === undefined) continue;
    objects.push(o);
  }
  for (const o of objects) {
    const cls = await modelClass(o.apiVersion, o.kind);
    if (!cls) {
      problems.push(`${id(o)}: no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    for (const p of schemaProblems(cls, o)) problems.push(`${id(o)}: ${p}`);
  }
  if (problems.length === 0 && !schemaOnly.has(file)) problems.push(...semanticProblems(objects));
  if (problems.length > 0) {
    failed++;
    for (const p of problems) console.log(`FAIL ${build}: ${p}`);
  } else {
    const kinds = [...new Set(objects.map((o) => o.kind))].sort().join(", ");
    console.log(`ok   ${build}: ${objects.length} object${objects.length === 1 ? "" : "s"} (${kinds})`);
  }
}
process.exit(failed > 0 ? 1 : 0);
