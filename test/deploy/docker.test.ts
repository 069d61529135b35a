/**
 * The container files, checked without a Docker engine: docker-compose.yml
 * is validated by `docker-compose config` (Debian's docker-compose; see
 * scripts/ensure-docker-compose.sh) and its normalized form is checked for
 * what the deployment relies on; the Dockerfile is checked line by line, and
 * its HEALTHCHECK command is run against a real /healthz.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { closedPort } from '../cli/remote-helpers';
import { useTempDir } from '../helpers/store-temp';
import { ROOT } from './deploy-config';

const SECRETS = {
  NATS_SERVICE_PASSWORD: 'svc-pass',
  NATS_APP_PASSWORD: 'app-pass',
  NATS_OPERATOR_PASSWORD: 'op-pass',
  TABLEKEEPER_ADMIN_TOKEN: 'admin-token',
};

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], env: Record<string, string>, input?: string): Ran {
  const r = spawnSync(command, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, input, encoding: 'utf8' });
  if (r.error) throw new Error(`${command}: ${r.error.message} (run scripts/ensure-docker-compose.sh)`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('deploy - docker-compose.yml', () => {
  const tmp = useTempDir('tk-compose-');
  const bin = process.env.DOCKER_COMPOSE_BIN || 'docker-compose';

  /** `docker-compose config` on `file`, ignoring any `.env` a developer keeps beside it. */
  function composeConfig(file: string, env: Record<string, string>, extra: string[] = []): Ran {
    const envFile = path.join(tmp.dir, 'empty.env');
    writeFileSync(envFile, '');
    return run(bin, ['--env-file', envFile, '-f', file, 'config', ...extra], env);
  }

  /** The normalized compose file as JSON (PyYAML ships with docker-compose, under the system python). */
  function normalized(): any {
    const out = composeConfig(path.join(ROOT, 'docker-compose.yml'), SECRETS);
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    const json = run('/usr/bin/python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], {}, out.stdout);
    expect(json.status).toBe(0);
    return JSON.parse(json.stdout);
  }

  test('deploy - docker-compose config accepts the file', () => {
    const out = composeConfig(path.join(ROOT, 'docker-compose.yml'), SECRETS, ['-q']);
    expect(out).toEqual({ status: 0, stdout: '', stderr: '' });
  });

  test('deploy - the validator rejects a broken copy (so it really validates)', () => {
    const broken = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8').replace('    image: nats:', '    imagee: nats:');
    const file = path.join(tmp.dir, 'docker-compose.yml');
    writeFileSync(file, broken);
    const out = composeConfig(file, SECRETS, ['-q']);
    expect(out.status).not.toBe(0);
    expect(out.stderr).toMatch(/imagee/);
  });

  test('deploy - compose refuses to run without the secrets, and none is written in the file', () => {
    const out = composeConfig(path.join(ROOT, 'docker-compose.yml'), {}, ['-q']);
    expect(out.status).not.toBe(0);
    expect(out.stderr).toMatch(/set NATS_SERVICE_PASSWORD \(see deploy\/env\.example\)/);
    const text = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8');
    for (const value of Object.values(SECRETS)) expect(text).not.toContain(value);
  });

  test('deploy - services, images, health checks, restart policy and dependencies', () => {
    const c = normalized();
    expect(Object.keys(c.services).sort()).toEqual(['nats', 'tablekeeper']);
    const { nats, tablekeeper } = c.services;

    expect(nats.image).toMatch(/^nats:2\.\d+/);
    expect(nats.command).toEqual(['nats-server', '--config', '/etc/nats/nats-server.conf']);
    expect(nats.healthcheck.test.join(' ')).toMatch(/8222\/healthz/);
    expect(nats.environment).toEqual({
      NATS_SERVICE_PASSWORD: SECRETS.NATS_SERVICE_PASSWORD,
      NATS_APP_PASSWORD: SECRETS.NATS_APP_PASSWORD,
      NATS_OPERATOR_PASSWORD: SECRETS.NATS_OPERATOR_PASSWORD,
    });

    expect(tablekeeper.build).toEqual(expect.objectContaining({ context: ROOT, dockerfile: 'Dockerfile' }));
    expect(tablekeeper.healthcheck.test.join(' ')).toMatch(/\/healthz/);
    // Liveness is the right check only while no service waits on tablekeeper being healthy.
    expect(Object.values(c.services).filter((svc: any) => svc.depends_on?.tablekeeper !== undefined)).toEqual([]);
    expect(tablekeeper.depends_on).toEqual({ nats: { condition: 'service_healthy' } });
    expect(tablekeeper.environment).toEqual(
      expect.objectContaining({
        NATS_URL: 'nats://nats:4222',
        NATS_USER: 'tablekeeper',
        NATS_PASS: SECRETS.NATS_SERVICE_PASSWORD,
        TABLEKEEPER_ADMIN_TOKEN: SECRETS.TABLEKEEPER_ADMIN_TOKEN,
        TABLEKEEPER_HTTP_HOST: '0.0.0.0',
        TABLEKEEPER_DATA_DIR: '/data',
        TABLEKEEPER_BACKUP_DIR: '/backups',
      }),
    );
    for (const service of [nats, tablekeeper]) expect(service.restart).toBe('unless-stopped');
  });

  test('deploy - data lives in named volumes; the only host path is the read-only NATS config', () => {
    const c = normalized();
    expect(Object.keys(c.volumes).sort()).toEqual(['nats-data', 'tablekeeper-backups', 'tablekeeper-data']);
    const mounts = (service: any): string[] => service.volumes.map((v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v)));
    expect(mounts(c.services.tablekeeper).sort()).toEqual(['tablekeeper-backups:/backups:rw', 'tablekeeper-data:/data:rw']);
    expect(mounts(c.services.nats).sort()).toEqual([
      `${path.join(ROOT, 'deploy', 'nats-server.conf')}:/etc/nats/nats-server.conf:ro`,
      'nats-data:/data:rw',
    ]);
  });

  test('deploy - published ports listen on 127.0.0.1 only', () => {
    const c = normalized();
    for (const name of ['nats', 'tablekeeper']) {
      const ports: unknown[] = c.services[name].ports;
      expect(ports.length).toBeGreaterThan(0);
      for (const p of ports) {
        const hostIp = typeof p === 'string' ? p.split(':')[0] : (p as { host_ip?: string }).host_ip;
        expect({ name, hostIp }).toEqual({ name, hostIp: '127.0.0.1' });
      }
    }
  });
});

/** The Dockerfile's stages: `FROM` line and the instructions under it (continuations joined). */
function stages(text: string): { from: string; lines: string[] }[] {
  const joined = text.replace(/\\\n/g, ' ');
  const out: { from: string; lines: string[] }[] = [];
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (/^FROM\s/i.test(line)) out.push({ from: line, lines: [] });
    else out[out.length - 1]?.lines.push(line);
  }
  return out;
}

describe('deploy - Dockerfile', () => {
  const text = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const [build, runtime, ...more] = stages(text);

  test('deploy - two stages from a Node 24 LTS image: build, then runtime', () => {
    expect(more).toEqual([]);
    expect(text).toMatch(/^ARG NODE_IMAGE=node:24-[a-z-]+$/m);
    expect(build.from).toBe('FROM ${NODE_IMAGE} AS build');
    expect(runtime.from).toBe('FROM ${NODE_IMAGE} AS runtime');
  });

  test('deploy - the build stage installs everything and compiles every source folder', () => {
    expect(build.lines).toContainEqual(expect.stringMatching(/^RUN npm ci\b/));
    expect(build.lines).toContainEqual('RUN npx tsc -p tsconfig.build.json');
    // Every folder the build compiles (bench aside: it needs the tests) is copied in.
    const include: string[] = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')).include;
    for (const folder of include.filter((f) => f !== 'bench')) {
      expect(build.lines).toContain(`COPY ${folder} ./${folder}`);
    }
  });

  test('deploy - the runtime stage has production dependencies only, runs as a non-root user, with volumes and a health check', () => {
    const lines = runtime.lines;
    expect(lines).toContainEqual(expect.stringMatching(/^RUN npm ci --omit=dev\b/));
    expect(lines).toContain('COPY --from=build /app/dist ./dist');
    const users = lines.filter((l) => /^USER\s/.test(l));
    expect(users).toEqual(['USER node']);
    // USER comes before the commands the container runs.
    expect(lines.indexOf('USER node')).toBeLessThan(lines.findIndex((l) => l.startsWith('ENTRYPOINT')));
    expect(lines.slice(lines.indexOf('USER node')).filter((l) => l.startsWith('RUN'))).toEqual([]);
    expect(lines).toContain('VOLUME ["/data", "/backups"]');
    expect(lines).toContainEqual(expect.stringMatching(/^ENV .*TABLEKEEPER_HTTP_HOST=0\.0\.0\.0/));
    expect(lines).toContainEqual(expect.stringMatching(/^HEALTHCHECK .*CMD \[.*\/healthz/));
  });

  test('deploy - the HEALTHCHECK command passes on a live /healthz and fails without one', async () => {
    const line = runtime.lines.find((l) => l.startsWith('HEALTHCHECK')) ?? '';
    const argv: string[] = JSON.parse(line.slice(line.indexOf('CMD ') + 4));
    expect(argv[0]).toBe('node');
    const server = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((server.address() as AddressInfo).port);
      const check = (p: string) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, argv.slice(1), {
            env: { PATH: process.env.PATH ?? '', TABLEKEEPER_HTTP_PORT: p },
            stdio: 'ignore',
          });
          child.once('exit', (code) => resolve(code));
        });
      expect(await check(port)).toBe(0);
      expect(await check(String(await closedPort()))).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('deploy - .dockerignore keeps local state and secrets out of the build context', () => {
    const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const entry of ['.git', 'node_modules', 'dist', 'data', '.env', 'test']) expect(ignored).toContain(entry);
  });
});
