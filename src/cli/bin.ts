/** Process entry of the CLI: quiets node:sqlite's experimental notice, runs, exits with the command's code. */
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name === 'ExperimentalWarning' && /SQLite/i.test(warning.message)) return;
  process.stderr.write(`${warning.name}: ${warning.message}\n`);
});

// Before anything else opens a file: descriptors inherited from our parent must not reach sandboxes.
const { closeInheritedDescriptors } = await import('../adapters/host/inherited-fds.ts');
closeInheritedDescriptors();

const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
