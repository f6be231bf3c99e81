// dltmw explorer: renders the node's /api/ JSON. Everything from the ledger is put in the page
// with textContent, never as HTML: a contract argument or event payload is anybody's text.
// Live updates: one poll of /api/node at a time, every POLL_MS (backing off to BACKOFF_MAX_MS
// while the node does not answer); a new block refreshes the list when the newest page is shown.
"use strict";

const POLL_MS = 2000;
const BACKOFF_MAX_MS = 30000;
const PAGE = 20;
const state = {
  channel: null, before: null, heights: {}, selected: null, pollMs: POLL_MS, notaries: [],
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch("/api/" + path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(err) { $("#error").textContent = err ? String(err.message || err) : ""; }

function who(identity) {
  return identity ? `${identity.name} (${identity.org})` : "";
}

async function loadNode() {
  const node = await api("node");
  state.notaries = node.notaries || [];
  const notaries = state.notaries.length ? ` · notary: ${state.notaries.join(", ")}` : "";
  $("#node").textContent = `${node.node} · ${node.org}${notaries}`;
  const nav = $("#channels");
  nav.replaceChildren();
  let changed = false;
  for (const ch of node.channels) {
    if (state.heights[ch.id] !== ch.height) changed = true;
    state.heights[ch.id] = ch.height;
    nav.append(el("button", {
      class: ch.id === state.channel ? "active" : "",
      "data-channel": ch.id,
      onclick: () => selectChannel(ch.id),
    }, `${ch.id} (${ch.height})`));
    if (ch.id === state.channel) {
      const view = ch.view === null ? "" : ` · PBFT-lite view ${ch.view}`;
      const ordering = ch.ordering ? ` · ordering ${ch.ordering}` : "";
      $("#channel-info").textContent =
        `height ${ch.height} · roles here: ${ch.roles.join(", ")}${ordering}${view}`;
    }
  }
  if (state.channel === null && node.channels.length) {
    const peer = node.channels.find((c) => c.roles.includes("peer")) || node.channels[0];
    await selectChannel(peer.id);
    return false;
  }
  return changed;
}

async function selectChannel(id) {
  state.channel = id;
  state.before = null;
  await loadNode();
  await loadBlocks();
}

async function loadBlocks() {
  const params = new URLSearchParams({ limit: PAGE });
  if (state.before !== null) params.set("before", state.before);
  const page = await api(`channels/${encodeURIComponent(state.channel)}/blocks?${params}`);
  const body = $("#blocks tbody");
  body.replaceChildren();
  for (const b of page.blocks) {
    const codes = Object.entries(b.codes).map(([c, n]) => `${c}×${n}`).join(" ");
    body.append(el("tr", {
      "data-block": b.number,
      class: b.number === state.selected ? "selected" : "",
      onclick: () => showBlock(b.number),
    }, el("td", {}, b.number), el("td", {}, b.tx_count), el("td", {}, codes),
       el("td", {}, b.signatures), el("td", { class: "hash" }, b.hash.slice(0, 16) + "…")));
  }
  state.next = page.next_before;
  $("#older").disabled = page.next_before === null;
}

function txRow(tx) {
  const what = tx.kind === "endorser_transaction"
    ? `${tx.contract}.${tx.function}(${tx.args.join(", ")})`
    : tx.kind === "private_transaction"
      ? el("span", { class: "private" }, `private payload, hash ${tx.private_payload_hash}`)
      : tx.kind;
  // An invalid transaction's events are on the ledger but were never emitted (not valid).
  const events = (tx.events || []).map((e) => `${e.contract}/${e.name}: ${e.payload}`).join("; ");
  const shown = events && tx.code !== "VALID" ? `(not emitted) ${events}` : events;
  return el("tr", { "data-tx-id": tx.tx_id },
    el("td", {}, tx.tx_index),
    el("td", { class: "hash" }, tx.unauthenticated ? `(unauthenticated, claims ${tx.claimed_tx_id})` : tx.tx_id),
    el("td", { class: `code ${tx.code}` }, tx.code),
    el("td", {}, what),
    el("td", {}, who(tx.creator)),
    el("td", {}, shown));
}

function txTable(txs) {
  return el("table", { id: "txs" },
    el("thead", {}, el("tr", {}, ...["#", "tx id", "code", "what", "creator", "events"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...txs.map(txRow)));
}

async function showBlock(number) {
  const block = await api(`channels/${encodeURIComponent(state.channel)}/blocks/${number}`);
  state.selected = number;
  for (const row of document.querySelectorAll("#blocks tbody tr")) {
    row.classList.toggle("selected", Number(row.dataset.block) === number);
  }
  const sigs = block.orderer_signatures.map((s) =>
    el("li", {}, `${who(s)}: `, el("span", { class: "hash" }, s.signature.slice(0, 32) + "…")));
  $("#detail").replaceChildren(
    el("h2", { id: "block-title" }, `Block ${block.number} of ${block.channel}`),
    el("p", {}, "hash ", el("span", { class: "hash" }, block.hash)),
    el("p", {}, "previous ", el("span", { class: "hash" }, block.previous_hash)),
    el("h3", {}, `Orderer signatures (${sigs.length})`), el("ul", {}, ...sigs),
    el("h3", {}, `Transactions (${block.tx_count})`), txTable(block.txs));
  location.hash = `#/${state.channel}/block/${number}`;
}

async function showNotarised(txId) {
  // A notary node: its decision on a transaction it signed (refusals are not stored).
  for (const notary of state.notaries) {
    try {
      const d = await api(`notaries/${encodeURIComponent(notary)}/txs/${encodeURIComponent(txId)}`);
      $("#detail").replaceChildren(
        el("h2", {}, `Notarised by ${d.notary}`),
        el("p", {}, "tx id ", el("span", { class: "hash" }, d.tx_id)),
        el("p", {}, `signed; inputs consumed: ${d.inputs_consumed}`),
        el("p", {}, "signature ", el("span", { class: "hash" }, d.signature)));
      return true;
    } catch (err) { /* not this notary's */ }
  }
  return false;
}

async function showTx(txId) {
  if (state.channel === null) {
    if (await showNotarised(txId)) return;
    throw new Error(`no transaction ${txId} here`);
  }
  let tx;
  try {
    tx = await api(`channels/${encodeURIComponent(state.channel)}/txs/${encodeURIComponent(txId)}`);
  } catch (err) {
    if (await showNotarised(txId)) return;
    throw err;
  }
  $("#detail").replaceChildren(
    el("h2", {}, `Transaction in block ${tx.block_number}`),
    el("p", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showBlock(tx.block_number); } },
      "show the block")),
    txTable([tx]));
  location.hash = `#/${state.channel}/tx/${txId}`;
}

async function poll() {
  try {
    const changed = await loadNode();
    if (changed && state.before === null) await loadBlocks();
    $("#live").className = "";
    state.pollMs = POLL_MS;
  } catch (err) {
    $("#live").className = "stale";
    state.pollMs = Math.min(state.pollMs * 2, BACKOFF_MAX_MS);
  }
  setTimeout(poll, state.pollMs);
}

async function fromHash() {
  const m = location.hash.match(/^#\/([^/]+)\/(block|tx)\/(.+)$/);
  if (!m) return;
  state.channel = decodeURIComponent(m[1]);
  await loadNode();
  await loadBlocks();
  if (m[2] === "block") await showBlock(Number(m[3]));
  else await showTx(m[3]);
}

function guarded(fn) {
  return async (...args) => {
    try { showError(null); await fn(...args); } catch (err) { showError(err); }
  };
}

showBlock = guarded(showBlock);
showTx = guarded(showTx);
selectChannel = guarded(selectChannel);

$("#older").addEventListener("click", guarded(async () => { state.before = state.next; await loadBlocks(); }));
$("#newest").addEventListener("click", guarded(async () => { state.before = null; await loadBlocks(); }));
$("#search").addEventListener("submit", guarded(async (e) => { e.preventDefault(); await showTx($("#txid").value.trim()); }));

guarded(async () => {
  if (location.hash) await fromHash();
  else await loadNode();
  document.body.dataset.loaded = "1";
  setTimeout(poll, POLL_MS);
})();
