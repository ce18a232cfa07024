// A receiving system for test/agent.sh: Medplum's Hl7Server (npm
// @medplum/hl7) on loopback, answering every message AA (its buildAck).
// Prints "port N" once listening, then one line per message: its type and
// MSH-10.  Usage: node receiver.mjs
globalThis.WebSocket ??= class WebSocket {};	// @medplum/core 5 expects one on Node 20
const { Hl7Server } = await import('@medplum/hl7');

const server = new Hl7Server((connection) => {
	connection.addEventListener('message', ({ message }) => {
		const msh = message.getSegment('MSH');
		console.log(`got ${msh.getField(9).toString()} ${msh.getField(10).toString()} ${message.getSegment('PID') ? 'with-PID' : 'no-PID'}`);
		connection.send(message.buildAck());
	});
});
await server.start(0);
console.log(`port ${server.server.address().port}`);
// stopped at once: the test uses that to make the receiver unreachable
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
