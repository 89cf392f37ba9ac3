import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');
/** Each test process gets its own run directory, so VMs of parallel test files never share sockets. */
export const runDir = mkdtempSync(join(tmpdir(), 'hvkit-test-run-'));
process.on('exit', () => {
  releaseNetworkLeftovers(runDir);
  rmSync(runDir, { recursive: true, force: true });
});

/**
 * Namespaces and bridges that VMs of this test process recorded and did not
 * remove (a test killed them): removed when nothing but loopback is left in
 * them, so no test leaves network state behind.
 */
function releaseNetworkLeftovers(dir: string): void {
  let vmDirs: string[];
  try {
    vmDirs = readdirSync(dir).filter((n) => n.endsWith('.net'));
  } catch {
    return;
  }
  const ipJson = (args: string[]): { ifname?: string }[] => {
    try {
      return JSON.parse(execFileSync('ip', ['-j', ...args], { encoding: 'utf8' }));
    } catch {
      return [];
    }
  };
  for (const vmDir of vmDirs) {
    const records = readdirSync(join(dir, vmDir)).map(
      (f) =>
        JSON.parse(readFileSync(join(dir, vmDir, f), 'utf8')) as {
          kind: string;
          name: string;
          netns?: string;
        },
    );
    for (const r of records.filter((x) => x.kind === 'bridge')) {
      const inNs = r.netns ? ['-n', r.netns] : [];
      if (ipJson([...inNs, 'link', 'show', 'master', r.name]).length === 0) {
        try {
          execFileSync('ip', [...inNs, 'link', 'delete', r.name], { stdio: 'ignore' });
          rmSync(join('/run/hvkit/net', `bridge-${r.netns ?? ''}@${r.name}.json`), { force: true });
        } catch {}
      }
    }
    for (const r of records.filter((x) => x.kind === 'netns')) {
      // A killed VM's TAP devices go a moment after it: wait for them (briefly).
      let links = ipJson(['-n', r.name, 'link', 'show']).filter((l) => l.ifname !== 'lo');
      for (let i = 0; i < 20 && links.length > 0; i++) {
        execFileSync('sleep', ['0.1']);
        links = ipJson(['-n', r.name, 'link', 'show']).filter((l) => l.ifname !== 'lo');
      }
      if (links.length === 0) {
        try {
          execFileSync('ip', ['netns', 'delete', r.name], { stdio: 'ignore' });
          rmSync(join('/run/hvkit/net', `netns-${r.name}.json`), { force: true });
        } catch {}
      }
    }
  }
}
/** Runs the hvkit command (through its bin shim) and collects its output. */
export function hvkit(
  args: string[],
  options: {
    timeoutMs?: number;
    onStdout?: (text: string, child: ReturnType<typeof spawn>) => void;
  } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'hvkit.js'), ...args], {
      cwd: root,
      env: { ...process.env, HVKIT_RUN_DIR: runDir },
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hvkit ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      options.onStdout?.(stdout, child);
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Starts `hvkit run` in the background and resolves once it has booted. The
 * returned `exit` promise settles when the VM process ends.
 */
export async function startVm(
  args: string[],
  timeoutMs = 60_000,
): Promise<{
  exit: ReturnType<typeof hvkit>;
  kill(signal?: NodeJS.Signals): void;
  output(): string;
}> {
  let child: ReturnType<typeof spawn> | undefined;
  let text = '';
  let booted!: () => void;
  const ready = new Promise<void>((resolve) => {
    booted = resolve;
  });
  const exit = hvkit(['run', ...args], {
    timeoutMs,
    onStdout: (out, c) => {
      child = c;
      text = out;
      if (out.includes('booted')) booted();
    },
  });
  await Promise.race([
    ready,
    exit.then((r) => Promise.reject(new Error(`hvkit run exited early: ${r.stderr}`))),
  ]);
  return { exit, kill: (signal = 'SIGINT') => child?.kill(signal), output: () => text };
}
