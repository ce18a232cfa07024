// MLLP clients for test/agent.sh.  The concurrent clients are Medplum's
// Hl7Client (npm @medplum/hl7, a client schedphi did not write); the
// misbehaving ones (garbage, a bad frame, an oversized message, a stalled
// sender, TLS) are raw node sockets, as no well-behaved client sends those.
// Usage: node client.mjs MODE PORT [ARGS...]; prints one result line.
// Synthetic people only.
globalThis.WebSocket ??= class WebSocket {};	// @medplum/core 5 expects one on Node 20
const { Hl7Client } = await import('@medplum/hl7');
const { Hl7Message } = await import('@medplum/core');
const net = await import('node:net');
const tls = await import('node:tls');
const { readFileSync } = await import('node:fs');

const [mode, portArg, ...rest] = process.argv.slice(2);
const port = Number(portArg);
const host = '127.0.0.1';
const VT = '\x0b', FS = '\x1c', CR = '\r';

// An S12 for appointment `filler` of synthetic patient `mrn`, with
// practitioner `dr` at `when` (YYYYMMDDHHMM, the sender's time zone).
export function s12(control, filler, mrn, dr, when, extra = '') {
	return [
		`MSH|^~\\&|AGENTEHR|AGENTFAC|SCHEDPHI|CLINIC|20260301120000||SIU^S12^SIU_S12|${control}|P|2.5.1`,
		`SCH||${filler}|||||ROUTINE|NORMAL|30|min|^^30^${when}||||||||||||||Booked`,
		`PID|1||${mrn}^^^AGENTEHR^MR||Agentsynthetic^Pat${mrn.slice(-2)}||19800101|F|||1 Main St^^Town^IL^60614`,
		`RGS|1|A`,
		`AIP|1|A|${dr}^Synthetic^Dora|ATTENDING||${when}|||30|min`,
	].join(CR) + CR + extra;
}

function when(day, hour) {
	const d = new Date(Date.UTC(2027, 0, 4 + day, hour, 0));
	const p = (n) => String(n).padStart(2, '0');
	return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}00`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The first MLLP frame from a socket, or null when it closes (or the
// timeout passes) first.
function firstFrame(sock, timeoutMs) {
	return new Promise((resolve) => {
		let buf = Buffer.alloc(0);
		const done = (v) => { clearTimeout(t); sock.removeAllListeners('data'); resolve(v); };
		const t = setTimeout(() => done(null), timeoutMs);
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			const s = buf.indexOf(0x0b), e = buf.indexOf(Buffer.from([0x1c, 0x0d]));
			if (s >= 0 && e > s) done(buf.subarray(s + 1, e).toString());
		});
		sock.on('close', () => done(null));
		sock.on('error', () => done(null));
	});
}
const msa = (ack) => {
	const seg = (ack ?? '').split(/\r|\n/).find((l) => l.startsWith('MSA'));
	return seg ? seg.split('|').slice(1, 3).join(' ') : 'none';
};
const connect = (p = port) => new Promise((resolve, reject) => {
	const s = net.connect(p, host, () => resolve(s));
	s.on('error', reject);
});

switch (mode) {
	case 'concurrent': {
		// N Hl7Clients at once, each sending M S12s (its own patient and
		// practitioner, one appointment per message) and checking each ACK.
		const [clients, messages, tag] = rest.map((x, i) => (i < 2 ? Number(x) : x));
		let ok = 0;
		const bad = [];
		await Promise.all(Array.from({ length: clients }, async (_, c) => {
			const client = new Hl7Client({ host, port, connectTimeout: 5000 });
			for (let i = 0; i < messages; i++) {
				const control = `${tag}-${c}-${i}`;
				const msg = Hl7Message.parse(s12(control, `${tag}F${c}x${i}`, `AGMRN-${tag}-${c}`, `${tag}DR${c}`, when(i, 9 + c)));
				try {
					const ack = await client.sendAndWait(msg, { timeoutMs: 10000 });
					const code = ack.getSegment('MSA')?.getField(1)?.toString();
					const ref = ack.getSegment('MSA')?.getField(2)?.toString();
					if (code === 'AA' && ref === control) ok++;
					else bad.push(`${control}: ${code} ${ref}`);
				} catch (e) {
					bad.push(`${control}: ${e.message}`);
				}
			}
			await client.close();
		}));
		console.log(`${ok} ${bad.slice(0, 3).join('; ')}`.trim());
		break;
	}
	case 'garbage': {
		// garbage without a start byte, then a good frame on the same
		// connection: the garbage is passed over, the frame answered
		const s = await connect();
		s.write(Buffer.from('GET / HTTP/1.0\r\n\r\nnot hl7 at all \x00\xff\xfe', 'latin1'));
		await sleep(200);
		s.write(VT + s12('AGG-1', 'AGGF1', 'AGMRN-G1', 'AGDRG', when(40, 9)) + FS + CR);
		console.log(msa(await firstFrame(s, 10000)));
		s.destroy();
		break;
	}
	case 'badend': {
		// a frame whose end block is not followed by CR is dropped without
		// an ACK; the next good frame on the connection is answered
		const s = await connect();
		s.write(VT + s12('AGB-1', 'AGBF1', 'AGMRN-B1', 'AGDRB', when(41, 9)) + FS + 'X');
		s.write(VT + s12('AGB-2', 'AGBF2', 'AGMRN-B1', 'AGDRB', when(42, 9)) + FS + CR);
		console.log(msa(await firstFrame(s, 10000)));
		s.destroy();
		break;
	}
	case 'oversized': {
		// a message longer than --max-bytes (rest[0]): no ACK, closed
		const max = Number(rest[0]);
		const s = await connect();
		const big = s12('AGO-1', 'AGOF1', 'AGMRN-O1', 'AGDRO', when(43, 9), 'NTE|1||' + 'x'.repeat(max) + CR);
		s.write(VT + big + FS + CR);
		const ack = await firstFrame(s, 10000);
		console.log(ack === null ? `closed-without-ack ${s.destroyed || s.readableEnded ? 'closed' : 'open'}` : `ack ${msa(ack)}`);
		s.destroy();
		break;
	}
	case 'stall': {
		// half a frame, then silence: the agent must close it after its idle
		// timeout, and serve another client meanwhile
		const t0 = Date.now();
		const s = await connect();
		const closed = new Promise((r) => { s.on('close', () => r(Date.now() - t0)); s.on('error', () => {}); });
		s.write(VT + 'MSH|^~\\&|AGENTEHR|AGENTFAC|SCHEDPHI|CLINIC|20260301120000||SIU^S12^SIU_S12|AGS-1|P|2.5.1' + CR);
		await sleep(300);
		const client = new Hl7Client({ host, port, connectTimeout: 5000 });
		const t1 = Date.now();
		const ack = await client.sendAndWait(Hl7Message.parse(s12('AGS-2', 'AGSF2', 'AGMRN-S1', 'AGDRS', when(44, 9))), { timeoutMs: 10000 });
		const other = `${ack.getSegment('MSA').getField(1)} ${Date.now() - t1 < 1500 ? 'fast' : 'slow'}`;
		await client.close();
		const after = await Promise.race([closed, sleep(20000).then(() => -1)]);
		console.log(`${other} ${after < 0 ? 'never-closed' : after >= 1800 && after < 4000 ? 'closed-after-about-2s' : `closed-after-${after}ms`}`);
		s.destroy();
		break;
	}
	case 'tls': {
		// a TLS client with the CA (and a client certificate when given)
		const [ca, cert, key] = rest;
		const opts = { host, port, ca: readFileSync(ca), servername: 'localhost', minVersion: 'TLSv1.2' };
		if (cert) { opts.cert = readFileSync(cert); opts.key = readFileSync(key); }
		const s = tls.connect(opts);
		const up = await new Promise((r) => { s.once('secureConnect', () => r(true)); s.once('error', () => r(false)); s.once('close', () => r(false)); });
		// (with TLS 1.3 a refused client certificate shows after the
		// handshake, as the connection closing without an answer)
		if (!up) { console.log('refused'); break; }
		const proto = s.getProtocol();
		s.on('error', () => {});
		s.write(VT + s12('AGT-' + (cert ? 'C' : 'N'), 'AGTF' + (cert ? 'C' : 'N'), 'AGMRN-T1', 'AGDRT', when(cert ? 45 : 46, 9)) + FS + CR);
		const ack = await firstFrame(s, 10000);
		console.log(ack === null ? 'refused' : `${proto} ${msa(ack)}`);
		s.destroy();
		break;
	}
	case 'plain': {
		// plain MLLP to the TLS port: nothing is processed, no ACK
		const s = await connect();
		s.on('error', () => {});
		s.write(VT + s12('AGP-1', 'AGPF1', 'AGMRN-P1', 'AGDRP', when(47, 9)) + FS + CR);
		const ack = await firstFrame(s, 5000);
		console.log(ack === null ? 'no-ack' : `ack ${msa(ack)}`);
		s.destroy();
		break;
	}
	case 'twice': {
		// two messages on one connection, rest[0] seconds apart (the test
		// cuts the agent's database connection in between)
		const client = new Hl7Client({ host, port, connectTimeout: 5000 });
		const codes = [];
		for (let i = 1; i <= 2; i++) {
			if (i === 2) await sleep(Number(rest[0]) * 1000);
			try {
				const ack = await client.sendAndWait(Hl7Message.parse(s12(`AGR-${i}`, `AGRF${i}`, 'AGMRN-R1', 'AGDRR', when(48 + i, 9))), { timeoutMs: 10000 });
				codes.push(ack.getSegment('MSA').getField(1).toString());
			} catch (e) {
				codes.push('no-ack');
			}
		}
		console.log(codes.join(' '));
		await client.close();
		break;
	}
	case 'noack': {
		// one message; prints its MSA-1 or no-ack (connection closed)
		const s = await connect();
		s.on('error', () => {});
		s.write(VT + s12('AGN-1', 'AGNF1', 'AGMRN-N1', 'AGDRN', when(52, 9)) + FS + CR);
		const ack = await firstFrame(s, 10000);
		console.log(ack === null ? `no-ack ${s.destroyed || s.readableEnded ? 'closed' : 'open'}` : `ack ${msa(ack)}`);
		s.destroy();
		break;
	}
	case 'hold': {
		// an Hl7Client that keeps its connection open (for the SIGTERM check)
		const client = new Hl7Client({ host, port, connectTimeout: 5000 });
		const ack = await client.sendAndWait(Hl7Message.parse(s12('AGH-1', 'AGHF1', 'AGMRN-H1', 'AGDRH', when(60, 9))), { timeoutMs: 10000 });
		console.log(`connected ${ack.getSegment('MSA').getField(1)}`);
		await sleep(Number(rest[0] ?? 30) * 1000);
		await client.close();
		break;
	}
	default:
		console.error(`unknown mode ${mode}`);
		process.exit(2);
}
process.exit(0);
