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

/** One of the promises in docs/PERFORMANCE.md ("Targets"), as this run measured it. */
export interface TargetCheck {
  /** What is promised, e.g. `Warm start p50, Python`. */
  readonly promise: string;
  /** The bound, e.g. `≤ 5 ms`. */
  readonly goal: string;
  /** The measured value, formatted, with what it was compared to. */
  readonly measured: string;
  /** undefined: not measured in this run (a peer absent, a scenario skipped). */
  readonly met: boolean | undefined;
  /** Anchor of the section in docs/PERFORMANCE.md with the numbers, e.g. `#start-latency`. */
  readonly section: string;
}

/** A start-latency point for the chart (docs/perf/start-latency.svg). */
export interface StartPoint {
  /** `floor (raw bwrap)`, `aegis cold`, `aegis warm`, or a peer's name. */
  readonly system: string;
  /** What ran: `python`, `node`, `busybox`. */
  readonly program: string;
  /** What was measured, e.g. `call → first line`. */
  readonly span: string;
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
}

export interface ScenarioReport {
  /** Printed to stdout. */
  readonly text: string;
  /** Sections of docs/PERFORMANCE.md this run refreshes. */
  readonly docs: readonly DocSection[];
  /** Everything measured, for bench/results/<date>-<host>.json. */
  readonly raw: unknown;
  /** The promises this scenario checks, and chart points; `bench/run.ts` gathers them over all scenarios run. */
  readonly findings?: {
    readonly targets?: readonly TargetCheck[];
    readonly starts?: readonly StartPoint[];
  };
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  run(options: BenchOptions): Promise<ScenarioReport>;
}
