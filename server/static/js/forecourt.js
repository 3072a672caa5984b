/* Forecourt dashboard: copy buttons, confirmations, busy buttons, photo preview, before/after slider, refine clicks.
   Every page works without this file; it only makes things nicer. */
(function () {
  "use strict";

  function copyText(input, status) {
    function done(ok) {
      if (status) status.textContent = ok ? "Copied." : "Select the text and copy it with Ctrl+C (Cmd+C on a Mac).";
    }
    function fallback() {
      input.focus();
      input.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }

  function initCopy() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var input = document.querySelector(btn.getAttribute("data-copy"));
        var status = document.getElementById(btn.getAttribute("aria-describedby"));
        if (input) copyText(input, status);
      });
    });
    document.querySelectorAll("input[readonly]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });
  }

  function initConfirm() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }

  function initBusy() {
    document.querySelectorAll("button[data-busy]").forEach(function (btn) {
      var form = btn.form;
      if (!form) return;
      form.addEventListener("submit", function (ev) {
        if (ev.defaultPrevented) return;
        window.setTimeout(function () {  // after the browser has taken the form's values
          btn.disabled = true;
          btn.setAttribute("aria-busy", "true");
          btn.textContent = btn.getAttribute("data-busy");
        }, 0);
      });
    });
  }

  function initPhoto() {
    var input = document.getElementById("photo");
    var preview = document.getElementById("photo-preview");
    var drop = document.getElementById("drop");
    if (!input || !preview || !drop) return;
    function show() {
      var file = input.files && input.files[0];
      if (!file) { preview.hidden = true; return; }
      preview.src = URL.createObjectURL(file);
      preview.alt = "Chosen photo: " + file.name;
      preview.hidden = false;
      drop.querySelector(".drop-title").textContent = file.name;
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (ev) {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        input.files = ev.dataTransfer.files;
        show();
      }
    });
  }

  function initCompare() {
    var range = document.getElementById("compare-range");
    var before = document.getElementById("before-layer");
    var divider = document.getElementById("divider");
    var box = document.getElementById("compare");
    if (!range || !before || !box) return;
    function set(v) {
      v = Math.max(0, Math.min(100, v));
      range.value = v;
      before.style.clipPath = "inset(0 " + (100 - v) + "% 0 0)";
      divider.style.left = v + "%";
    }
    range.addEventListener("input", function () { set(Number(range.value)); });
    var dragging = false;
    function fromPointer(ev) {
      var r = box.getBoundingClientRect();
      set(((ev.clientX - r.left) / r.width) * 100);
    }
    box.addEventListener("pointerdown", function (ev) {
      dragging = true;
      box.setPointerCapture(ev.pointerId);
      fromPointer(ev);
    });
    box.addEventListener("pointermove", function (ev) { if (dragging) fromPointer(ev); });
    box.addEventListener("pointerup", function () { dragging = false; });
    set(Number(range.value));
  }

  function initRefine() {
    var canvas = document.getElementById("refine-canvas");
    var hit = document.getElementById("refine-hit");
    var field = document.getElementById("refine-points");
    var count = document.getElementById("refine-count");
    var undo = document.getElementById("refine-undo");
    var cross = document.getElementById("refine-cross");
    if (!canvas || !hit || !field) return;
    var points = [];
    var cursor = [0.5, 0.5];
    function mode() {
      var checked = document.querySelector("#refine-form input[name=mode]:checked");
      return checked && checked.value === "0" ? 0 : 1;
    }
    function render() {
      canvas.querySelectorAll(".point").forEach(function (el) { el.remove(); });
      points.forEach(function (p, i) {
        var dot = document.createElement("span");
        dot.className = "point " + (p[2] ? "keep" : "remove");
        dot.style.left = (p[0] * 100) + "%";
        dot.style.top = (p[1] * 100) + "%";
        dot.title = (p[2] ? "Keep" : "Remove") + " point " + (i + 1);
        canvas.appendChild(dot);
      });
      field.value = JSON.stringify(points);
      var keep = points.filter(function (p) { return p[2]; }).length;
      var remove = points.length - keep;
      count.textContent = points.length ? keep + " keep and " + remove + " remove point" + (remove === 1 ? "" : "s") + "."
        : "No points yet.";
    }
    function moveCross() {
      cross.hidden = false;
      cross.style.left = (cursor[0] * 100) + "%";
      cross.style.top = (cursor[1] * 100) + "%";
    }
    function add(x, y) {
      points.push([Math.round(x * 10000) / 10000, Math.round(y * 10000) / 10000, mode()]);
      render();
    }
    hit.addEventListener("click", function (ev) {
      if (ev.detail === 0) { add(cursor[0], cursor[1]); return; }  // Enter or Space on the button
      var r = canvas.getBoundingClientRect();
      add((ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
    });
    hit.addEventListener("keydown", function (ev) {
      var step = ev.shiftKey ? 0.1 : 0.02;
      var moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
      if (!moves[ev.key]) return;
      ev.preventDefault();
      cursor = [Math.max(0, Math.min(1, cursor[0] + moves[ev.key][0])),
                Math.max(0, Math.min(1, cursor[1] + moves[ev.key][1]))];
      moveCross();
    });
    hit.addEventListener("focus", moveCross);
    hit.addEventListener("blur", function () { cross.hidden = true; });
    if (undo) undo.addEventListener("click", function () { points.pop(); render(); });
    render();
  }

  document.addEventListener("DOMContentLoaded", function () {
    initCopy();
    initConfirm();
    initBusy();
    initPhoto();
    initCompare();
    initRefine();
  });
})();
