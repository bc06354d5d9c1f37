// ftlcloud review page: decisions per candidate, kept in localStorage, exported as CSV.
// Self-contained on purpose: the page must work offline from the store (no CDN).
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("ftl-config").textContent);
  var storageKey = "ftlcloud-review:" + config.title;
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var byId = {};
  cards.forEach(function (card) { byId[card.dataset.cid] = card; });
  var state = load();
  var current = -1;

  function load() {
    try {
      var raw = window.localStorage.getItem(storageKey);
      var parsed = raw ? JSON.parse(raw) : {};
      return parsed && typeof parsed === "object" ? parsed : {};
    } catch (err) {
      return {};  // storage blocked or corrupt: start empty rather than break the page
    }
  }

  function save() {
    try {
      window.localStorage.setItem(storageKey, JSON.stringify(state));
    } catch (err) {
      toast("Could not save in this browser: export often.");
    }
  }

  function entry(cid) {
    if (!state[cid]) { state[cid] = { decision: "", note: "" }; }
    return state[cid];
  }

  function render(card) {
    var e = state[card.dataset.cid] || { decision: "", note: "" };
    card.dataset.decision = e.decision || "";
    card.querySelector(".state").textContent = e.decision ? e.decision + "ed" : "undecided";
    var note = card.querySelector(".note");
    if (document.activeElement !== note) { note.value = e.note || ""; }
  }

  function counts() {
    var accepted = 0, rejected = 0;
    cards.forEach(function (card) {
      var e = state[card.dataset.cid];
      if (e && e.decision === "accept") { accepted += 1; }
      if (e && e.decision === "reject") { rejected += 1; }
    });
    return { accepted: accepted, rejected: rejected, decided: accepted + rejected };
  }

  function updateCounter() {
    var c = counts();
    document.getElementById("counter").innerHTML =
      "<b>" + c.decided + "</b> / " + cards.length + " decided · " +
      "<b>" + c.accepted + "</b> accepted · <b>" + c.rejected + "</b> rejected · " +
      "<b>" + (cards.length - c.decided) + "</b> to go";
  }

  function decide(card, decision) {
    var e = entry(card.dataset.cid);
    e.decision = decision;
    if (!decision && !e.note) { delete state[card.dataset.cid]; }
    save();
    render(card);
    updateCounter();
  }

  function visible() {
    return cards.filter(function (card) { return card.offsetParent !== null; });
  }

  function select(index, scroll) {
    if (index < 0 || index >= cards.length) { return; }
    if (current >= 0) { cards[current].classList.remove("current"); }
    current = index;
    cards[current].classList.add("current");
    if (scroll) { cards[current].scrollIntoView({ block: "nearest", behavior: "auto" }); }
  }

  function move(step) {
    var list = visible();
    if (!list.length) { return; }
    var pos = list.indexOf(cards[current]);
    var next = pos < 0 ? (step > 0 ? 0 : list.length - 1)
      : Math.max(0, Math.min(list.length - 1, pos + step));
    select(cards.indexOf(list[next]), true);
  }

  function csvField(text) {
    text = String(text == null ? "" : text);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function exportCsv() {
    // Same columns read_decisions() accepts; undecided candidates are left out.
    var lines = ["candidate_id,decision,note"];
    cards.forEach(function (card) {
      var e = state[card.dataset.cid];
      if (e && e.decision) {
        lines.push([card.dataset.cid, e.decision, e.note || ""].map(csvField).join(","));
      }
    });
    var blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = config.decisionsFilename;
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    toast("Exported " + (lines.length - 1) + " decisions to " + config.decisionsFilename);
  }

  var toastTimer = null;
  function toast(text) {
    var el = document.getElementById("toast");
    el.textContent = text;
    el.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.classList.remove("show"); }, 2500);
  }

  cards.forEach(function (card, index) {
    render(card);
    card.addEventListener("click", function () { select(index, false); });
    card.querySelector(".btn-accept").addEventListener("click", function () { decide(card, "accept"); });
    card.querySelector(".btn-reject").addEventListener("click", function () { decide(card, "reject"); });
    card.querySelector(".btn-clear").addEventListener("click", function () { decide(card, ""); });
    card.querySelector(".note").addEventListener("input", function (ev) {
      entry(card.dataset.cid).note = ev.target.value;
      save();
    });
  });
  document.getElementById("export").addEventListener("click", exportCsv);
  document.getElementById("hide-decided").addEventListener("change", function (ev) {
    document.body.classList.toggle("hide-decided", ev.target.checked);
  });

  document.addEventListener("keydown", function (ev) {
    var target = ev.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) {
      if (ev.key === "Escape" || (ev.key === "Enter" && target.classList.contains("note"))) {
        target.blur();
        ev.preventDefault();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var card = current >= 0 ? cards[current] : null;
    switch (ev.key) {
      case "j": case "ArrowDown": case "ArrowRight": move(1); break;
      case "k": case "ArrowUp": case "ArrowLeft": move(-1); break;
      case "a": if (card) { decide(card, "accept"); move(1); } break;
      case "r": if (card) { decide(card, "reject"); move(1); } break;
      case "u": if (card) { decide(card, ""); } break;
      case "n": if (card) { card.querySelector(".note").focus(); } break;
      case "o": if (card) { window.open(card.querySelector("a.map").href, "_blank", "noopener"); } break;
      case "e": exportCsv(); break;
      default: return;
    }
    ev.preventDefault();
  });

  // Decisions stored for candidates no longer on the page are dropped from the counts only.
  updateCounter();
  if (cards.length) { select(0, false); }
  window.ftlReview = { state: state, storageKey: storageKey, byId: byId };
})();
