// The widget manager's styles ask for their icon fonts relative to the URL require.js gives its modules, which
// by default is beside the page (chapters/@jupyter-widgets/...). Point those module names at the vendored copy in
// _static/vendor/html-manager, where the fonts are, so every page finds them with no CDN.
(function () {
  var src = document.currentScript.src;
  var root = src.slice(0, src.lastIndexOf("/_static/") + "/_static/".length);
  require.config({paths: {"@jupyter-widgets/html-manager/dist": root + "vendor/html-manager"}});
})();
