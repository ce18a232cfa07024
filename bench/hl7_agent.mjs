// MLLP load for bench/hl7_agent.sh: CLIENTS connections to the agent, each
// sending S12s one at a time (the next once the ACK is in), for SECONDS.
// Each message books one of 2,000 synthetic patients with one of 50
// practitioners at a random quarter hour of the next eight years (as
// bench/hl7_ingest.sh).  Prints "messages seconds p50_ms p99_ms aa other".
// Usage: node hl7_agent.mjs PORT CLIENTS SECONDS TAG
import net from 'node:net';

const [port, clients, seconds, tag] = [Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const rnd = (n) => Math.floor(Math.random() * n);
const p2 = (n) => String(n).padStart(2, '0');
function s12(control) {
	const d = new Date(Date.UTC(2027, 0, 4) + rnd(280000) * 900000);
	const when = `${d.getUTCFullYear()}${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}`;
	return `MSH|^~\\&|BENCHEHR|BENCHFAC|SCHEDPHI|C|20260301120000||SIU^S12^SIU_S12|${control}|P|2.5.1\r` +
		`SCH||${control}F|||||ROUTINE|NORMAL|15|min|^^15^${when}||||||||||||||Booked\r` +
		`PID|1||BM${1 + rnd(2000)}^^^BENCHEHR^MR||Benchsynthetic^Pat||19800101|F\r` +
		`RGS|1|A\rAIP|1|A|DR${1 + rnd(50)}^Bench^Dr|ATTENDING||||||15|min\r`;
}
const lat = [];
let aa = 0, other = 0;
const end = Date.now() + seconds * 1000;
const t0 = Date.now();
await Promise.all(Array.from({ length: clients }, (_, c) => new Promise((resolve) => {
	const sock = net.connect(port, '127.0.0.1');
	sock.setNoDelay(true);
	let buf = Buffer.alloc(0), n = 0, sent = 0;
	const next = () => {
		if (Date.now() >= end) { sock.end(); return resolve(); }
		sent = performance.now();
		sock.write('\x0b' + s12(`${tag}-${c}-${n++}`) + '\x1c\r');
	};
	sock.on('connect', next);
	sock.on('data', (d) => {
		buf = Buffer.concat([buf, d]);
		const e = buf.indexOf(Buffer.from([0x1c, 0x0d]));
		if (e < 0) return;
		const ack = buf.subarray(0, e).toString();
		buf = buf.subarray(e + 2);
		lat.push(performance.now() - sent);
		if (/\rMSA\|AA\|/.test(ack)) aa++; else other++;
		next();
	});
	sock.on('error', (err) => { console.error(`client ${c}: ${err.message}`); resolve(); });
})));
const secs = (Date.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(2) : '?');
console.log(`${lat.length} ${secs.toFixed(2)} ${pct(0.5)} ${pct(0.99)} ${aa} ${other}`);
