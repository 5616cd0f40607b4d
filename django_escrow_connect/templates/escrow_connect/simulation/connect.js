/* A stand-in for Stripe's Connect.js, served by django-escrow-connect's
 * simulated Stripe (development and demos only: no network, no Stripe).
 *
 * It defines window.StripeConnect.init like Stripe's script does, so a page
 * written for Connect.js runs unchanged: with a <script> tag (StripeConnect.onLoad
 * is called once loaded) or with @stripe/connect-js's loadConnectAndInitialize,
 * which uses an already loaded StripeConnect. create(name) returns a
 * <stripe-connect-NAME> element that fetches its content from the simulated
 * Stripe with the account session's client secret (in a POST body, never a URL).
 */
(function () {
  "use strict";
  var COMPONENT_URL = {{ component_url|safe }};
  var SETTERS = [
    "setOnExit", "setOnStepChange", "setOnLoadError", "setOnLoaderStart",
    "setOnNotificationsChange", "setCollectionOptions", "setFullTermsOfServiceUrl",
    "setRecipientTermsOfServiceUrl", "setPrivacyPolicyUrl", "setSkipTermsOfServiceCollection",
    "setPayment", "setPayout", "setOnClose", "setDefaultFilters"
  ];

  function init(options) {
    if (!options || typeof options.fetchClientSecret !== "function") {
      throw new Error("StripeConnect.init needs fetchClientSecret (simulated Connect.js)");
    }
    var secret = null;
    function clientSecret() {
      // Like Connect.js: one secret per instance, fetched eagerly, renewed on logout.
      if (secret === null) {
        secret = Promise.resolve().then(options.fetchClientSecret);
      }
      return secret;
    }
    clientSecret();

    function create(name) {
      var element = document.createElement("stripe-connect-" + name);
      var handlers = {};
      SETTERS.forEach(function (setter) {
        element[setter] = function (value) { handlers[setter] = value; };
      });
      element.setAttribute("data-simulated", "true");
      element.setAttribute("data-state", "loading");
      element.textContent = "Loading " + name + "…";
      clientSecret()
        .then(function (value) {
          if (typeof handlers.setOnLoaderStart === "function") {
            handlers.setOnLoaderStart({ elementTagName: name });
          }
          return fetch(COMPONENT_URL, {
            method: "POST",
            credentials: "omit",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ client_secret: value, component: name })
          });
        })
        .then(function (response) {
          return response.json().then(function (data) {
            if (!response.ok) {
              throw new Error((data.error && data.error.message) || response.statusText);
            }
            return data;
          });
        })
        .then(function (data) {
          element.innerHTML = data.html;
          element.setAttribute("data-state", "ready");
          if (data.notifications && typeof handlers.setOnNotificationsChange === "function") {
            handlers.setOnNotificationsChange(data.notifications);
          }
        })
        .catch(function (error) {
          element.setAttribute("data-state", "error");
          element.textContent = "Simulated Connect.js could not load " + name + ": " + error.message;
          if (typeof handlers.setOnLoadError === "function") {
            handlers.setOnLoadError({
              elementTagName: name,
              error: { type: "authentication_error", message: error.message }
            });
          }
        });
      return element;
    }

    return {
      create: create,
      update: function () {},
      logout: function () { secret = null; return Promise.resolve(); }
    };
  }

  var connect = window.StripeConnect = window.StripeConnect || {};
  connect.init = init;
  connect.simulated = true;
  if (typeof connect.onLoad === "function") {
    connect.onLoad();
  }
})();
