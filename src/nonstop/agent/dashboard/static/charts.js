// Small hand-written SVG line charts: one line per release over time, step boundaries drawn.
(() => {
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6feb", "#cf222e", "#8250df", "#1a7f37", "#9a6700"];

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

// spec: {title, unit, from, until, series: {name: [[ts, value], ...]}, marks: [{ts, label}]}
function lineChart(spec) {
  const W = 560, H = 200, L = 46, R = 10, T = 28, B = 22;
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title });
  svg.appendChild(svgEl("text", { x: L, y: 13, "font-weight": "600" }, spec.title));
  const span = Math.max(1, spec.until - spec.from);
  let top = 0;
  for (const points of Object.values(spec.series)) for (const p of points) if (p[1] !== null) top = Math.max(top, p[1]);
  top = niceMax(top);
  const x = (ts) => L + ((ts - spec.from) / span) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.appendChild(svgEl("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.appendChild(svgEl("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v) + spec.unit));
  }
  for (const ts of [spec.from, spec.from + span / 2, spec.until]) {
    svg.appendChild(svgEl("text", { x: x(ts), y: H - 6, "text-anchor": "middle" }, clock(ts)));
  }
  for (const mark of spec.marks || []) {
    if (mark.ts < spec.from || mark.ts > spec.until) continue;
    svg.appendChild(svgEl("line", { class: "mark", x1: x(mark.ts), x2: x(mark.ts), y1: T, y2: H - B }));
    svg.appendChild(svgEl("text", { x: x(mark.ts) + 3, y: T + 9 }, mark.label));
  }
  Object.entries(spec.series).forEach(([name, points], i) => {
    const d = [];
    let pen = "M";
    for (const [ts, v] of points) {
      if (v === null) { pen = "M"; continue; }
      d.push(`${pen}${x(ts).toFixed(1)},${y(v).toFixed(1)}`);
      pen = "L";
    }
    if (d.length) svg.appendChild(svgEl("path", { d: d.join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5, "data-release": name }));
  });
  return svg;
}

function legend(names) {
  const div = document.createElement("div");
  div.className = "legend";
  names.forEach((name, i) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i % COLORS.length];
    span.append(swatch, name);
    div.appendChild(span);
  });
  return div;
}

function fmt(v) {
  if (v === 0) return "0";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return v.toPrecision(2).replace(/\.?0+$/, "");
}

window.nonstopCharts = { lineChart, legend, fmt, clock };
})();
