/* portcullis browser client: window.portcullis (fetch, axios, session, staySignedIn). */
(function () {
  "use strict";
  if (window.portcullis) return;
  window.portcullis = {};
})();
