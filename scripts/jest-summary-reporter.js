// Prints one plain closing line, "N passed, N failed, N skipped", after jest's
// own summary so that any tool reading the end of the log sees the totals.
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const line = `${results.numPassedTests} passed, ${results.numFailedTests} failed, ${results.numPendingTests} skipped`;
    // Written at exit so it is the last line, after jest's own summary.
    process.once('exit', () => process.stdout.write(`${line}\n`));
  }
}
module.exports = SummaryReporter;
