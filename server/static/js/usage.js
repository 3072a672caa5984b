/* Usage page: one stacked bar chart per metric (Chart.js, served by the box), stacked by API key. */
(function () {
  "use strict";
  var COLOURS = ["#0b5cad", "#e07a1f", "#2a9d8f", "#8e44ad", "#c0392b", "#5d6d7e", "#b7950b", "#1e8449"];

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof Chart === "undefined") return;  // the numbers stay in the tables below each chart
    Chart.defaults.font.family = "system-ui, sans-serif";
    Chart.defaults.animation = false;
    document.querySelectorAll("script.chart-data").forEach(function (node) {
      var data = JSON.parse(node.textContent);
      var canvas = document.getElementById(node.getAttribute("data-for"));
      if (!canvas) return;
      new Chart(canvas, {
        type: "bar",
        data: {
          labels: data.labels.map(function (l) { return l.length === 10 ? l.slice(5) : l; }),
          datasets: data.series.map(function (s, i) {
            return {label: s.name, data: s.data, backgroundColor: COLOURS[i % COLOURS.length], borderWidth: 0};
          })
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          scales: {x: {stacked: true, ticks: {autoSkip: true, maxRotation: 0}},
                   y: {stacked: true, beginAtZero: true}},
          plugins: {legend: {position: "bottom", labels: {boxWidth: 12}}}
        }
      });
      canvas.setAttribute("data-rendered", "yes");
    });
  });
})();
