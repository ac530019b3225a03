// Starts the real Python daemon for the tests: `python -m aivcs_ledgerd` with
// the interpreter from $PYTHON, else the repository's .venv, else python3.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const PORT_LINE = /listening on .* \(port (\d+)\)/;

export function python() {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export async function startDaemon({ db = "mem://", listen = "127.0.0.1:0", timeoutMs = 30_000 } = {}) {
  const cwd = mkdtempSync(join(tmpdir(), "aivcs-node-test-"));
  const child = spawn(python(), ["-m", "aivcs_ledgerd", "--listen", listen, "--db", db], {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, AIVCS_LEDGER_GRACE_PERIOD: "1" },
  });
  let log = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const target = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in time:\n${log}`)), timeoutMs);
    const onData = (data) => {
      log += data.toString();
      const match = PORT_LINE.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(`127.0.0.1:${match[1]}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code} (python: ${python()}):\n${log}`));
    });
  });
  return {
    target,
    log: () => log,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
