// tokenbroker console: small enhancements only; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Move focus to the list of problems the broker reported, so a keyboard or screen reader
  // user hears them first.
  const errors = document.getElementById("form-errors");
  if (errors) {
    errors.focus();
  }

  // Bound claims: an "Add a claim" button that copies an empty row.
  const rows = document.getElementById("claim-rows");
  if (rows) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Add a claim";
    button.addEventListener("click", () => {
      const all = rows.querySelectorAll("[data-claim-row]");
      const template = all[all.length - 1];
      const row = template.cloneNode(true);
      const n = all.length + 1;
      row.classList.remove("invalid");
      row.querySelectorAll(".error").forEach((e) => e.remove());
      const [claimLabel, valueLabel] = row.querySelectorAll("label");
      const [claim, value] = row.querySelectorAll("input");
      claim.id = `claim-${n}`;
      value.id = `claim-value-${n}`;
      claim.value = "";
      value.value = "";
      value.removeAttribute("aria-describedby");
      claimLabel.htmlFor = claim.id;
      claimLabel.textContent = `Claim ${n}`;
      valueLabel.htmlFor = value.id;
      valueLabel.textContent = `Value ${n}`;
      rows.appendChild(row);
      claim.focus();
    });
    rows.after(button);
  }
});
