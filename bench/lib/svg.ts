/**
 * A hand-written SVG bar chart (no dependency): one horizontal bar per row from the axis origin to `value`, an
 * optional whisker from `value` to `whisker` (p50 → p99), on a log or linear axis. Plain SVG 1.1 text that GitHub
 * renders inline and a diff can read.
 */

export interface BarRow {
  readonly label: string;
  /** Smaller grey text under the label (what was measured). */
  readonly note?: string;
  readonly value: number;
  readonly whisker?: number;
  readonly color: string;
}

export interface BarChart {
  readonly title: string;
  readonly subtitle?: string;
  readonly unit: string;
  readonly rows: readonly BarRow[];
  /** Logarithmic axis (values spanning orders of magnitude). @default true */
  readonly log?: boolean;
  /** Legend entries: colour → meaning. */
  readonly legend?: readonly { readonly color: string; readonly label: string }[];
  /** @default 960 */
  readonly width?: number;
}

const escapeXml = (text: string) =>
  text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');

/** 1, 2, 5, 10, 20, 50, … within [min, max]. */
function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let decade = 10 ** Math.floor(Math.log10(min)); decade <= max; decade *= 10) {
    for (const step of [1, 2, 5]) {
      const tick = decade * step;
      if (tick >= min * 0.999 && tick <= max * 1.001) ticks.push(tick);
    }
  }
  return ticks;
}

function linearTicks(max: number): number[] {
  const raw = max / 6;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let tick = 0; tick <= max * 1.001; tick += step) ticks.push(Math.round(tick * 1e6) / 1e6);
  return ticks;
}

function formatValue(value: number): string {
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function renderBarChart(chart: BarChart): string {
  const width = chart.width ?? 960;
  const log = chart.log ?? true;
  const labelWidth = 330;
  const valueWidth = 150;
  const plotLeft = labelWidth;
  const plotRight = width - valueWidth;
  const top = chart.subtitle ? 64 : 44;
  const rowHeight = 30;
  const plotHeight = chart.rows.length * rowHeight;
  const legendHeight = chart.legend?.length ? 28 : 0;
  const height = top + plotHeight + 36 + legendHeight;
  const values = chart.rows.flatMap((row) => [row.value, row.whisker ?? row.value]).filter((v) => v > 0);
  const maxValue = Math.max(...values, 1);
  const minValue = Math.min(...values, maxValue);
  const axisMin = log ? 10 ** Math.floor(Math.log10(minValue)) : 0;
  const axisMax = log ? 10 ** Math.ceil(Math.log10(maxValue)) : maxValue * 1.05;
  const x = (value: number) => {
    const fraction = log
      ? (Math.log10(Math.max(value, axisMin)) - Math.log10(axisMin)) /
        (Math.log10(axisMax) - Math.log10(axisMin))
      : value / axisMax;
    return plotLeft + fraction * (plotRight - plotLeft);
  };
  const ticks = log ? logTicks(axisMin, axisMax) : linearTicks(axisMax);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="600" fill="#1f2328">${escapeXml(chart.title)}</text>`,
  ];
  if (chart.subtitle) out.push(`<text x="12" y="40" fill="#59636e">${escapeXml(chart.subtitle)}</text>`);
  for (const tick of ticks) {
    const tx = x(tick).toFixed(1);
    out.push(
      `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${top + plotHeight}" stroke="#d1d9e0" stroke-width="1"/>`,
      `<text x="${tx}" y="${top + plotHeight + 16}" text-anchor="middle" fill="#59636e">${escapeXml(formatValue(tick))}</text>`,
    );
  }
  out.push(
    `<text x="${((plotLeft + plotRight) / 2).toFixed(1)}" y="${top + plotHeight + 32}" text-anchor="middle" fill="#59636e">${escapeXml(`${chart.unit}${log ? ' (log scale)' : ''}`)}</text>`,
  );
  chart.rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    const barY = y + 7;
    const barHeight = rowHeight - 14;
    const mid = y + rowHeight / 2;
    out.push(
      `<text x="${labelWidth - 10}" y="${row.note ? mid - 2 : mid + 4}" text-anchor="end" fill="#1f2328">${escapeXml(row.label)}</text>`,
    );
    if (row.note) {
      out.push(
        `<text x="${labelWidth - 10}" y="${mid + 11}" text-anchor="end" font-size="10" fill="#59636e">${escapeXml(row.note)}</text>`,
      );
    }
    const end = x(row.value);
    out.push(
      `<rect x="${plotLeft}" y="${barY}" width="${Math.max(1, end - plotLeft).toFixed(1)}" height="${barHeight}" fill="${row.color}" rx="2"/>`,
    );
    let label = formatValue(row.value);
    if (row.whisker !== undefined && row.whisker > row.value) {
      const wx = x(row.whisker).toFixed(1);
      out.push(
        `<line x1="${end.toFixed(1)}" y1="${mid}" x2="${wx}" y2="${mid}" stroke="#1f2328" stroke-width="1.5"/>`,
        `<line x1="${wx}" y1="${barY + 2}" x2="${wx}" y2="${barY + barHeight - 2}" stroke="#1f2328" stroke-width="1.5"/>`,
      );
      label += ` · ${formatValue(row.whisker)}`;
    }
    out.push(`<text x="${plotRight + 8}" y="${mid + 4}" fill="#1f2328">${escapeXml(label)}</text>`);
  });
  if (chart.legend?.length) {
    let lx = 12;
    const ly = height - 14;
    for (const entry of chart.legend) {
      out.push(
        `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${entry.color}" rx="2"/>`,
        `<text x="${lx + 17}" y="${ly}" fill="#1f2328">${escapeXml(entry.label)}</text>`,
      );
      lx += 17 + entry.label.length * 6.6 + 18;
    }
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
