/**
 * A raw request/reply echo over NATS, run as its own process so the
 * benchmark compares it with the service on equal terms. argv: url subject.
 */
import { NatsBus } from '../bus';

async function main(): Promise<void> {
  const [url, subject] = process.argv.slice(2);
  const bus = await NatsBus.connect({ servers: url, name: 'bench-echo' });
  bus.subscribe(subject, (msg) => void msg.respond(msg.data));
  await bus.flush();
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => void bus.close().then(() => process.exit(0)));
}

void main();
