/** Process entry of the CLI: quiets node:sqlite's experimental notice, runs, exits with the command's code. */
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name === 'ExperimentalWarning' && /SQLite/i.test(warning.message)) return;
  process.stderr.write(`${warning.name}: ${warning.message}\n`);
});

const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
