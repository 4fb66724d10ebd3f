/** The shape every benchmark scenario fills, so `bench/run.ts` can list, run and publish them uniformly. */

export interface BenchOptions {
  /** Fewer runs: a smoke check that finishes in under a minute, not numbers to publish. */
  readonly quick: boolean;
  /** Measured runs per variant. */
  readonly runs: number;
  /** Unmeasured runs per variant before measuring (page cache, JIT, lazily created files). */
  readonly warmup: number;
  /** Measured runs of CLI process starts (each costs a whole Node start). */
  readonly cliRuns: number;
  /** Also measure where the time goes (instrumented runs, reported separately). */
  readonly breakdown: boolean;
  /** Progress for humans, on stderr. */
  readonly log: (line: string) => void;
}

export interface DocSection {
  /** Marker name: the section lives between `<!-- bench:<marker>:begin -->` and `<!-- bench:<marker>:end -->`. */
  readonly marker: string;
  readonly markdown: string;
}

export interface ScenarioReport {
  /** Printed to stdout. */
  readonly text: string;
  /** Sections of docs/PERFORMANCE.md this run refreshes. */
  readonly docs: readonly DocSection[];
  /** Everything measured, for bench/results/<date>-<host>.json. */
  readonly raw: unknown;
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  run(options: BenchOptions): Promise<ScenarioReport>;
}
