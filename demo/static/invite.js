// The demo's invite page: the user's sharing link, the friends who joined
// through it and the rewards earned, from `referralctl serve` through the
// demo's /api/ proxy. Data is shown with textContent only.
"use strict";

(function () {
  const STATUS_TEXT = {
    pending: "Pending", review: "In review", available: "Ready to use", paid: "Paid out",
    redeemed: "Used", reversed: "Reversed", rejected: "Rejected",
  };

  function $(id) { return document.getElementById(id); }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const tr = document.createElement("tr");
    const td = cell(tr, text, "empty");
    td.colSpan = columns;
    tbody.appendChild(tr);
  }

  function day(iso) { return iso ? iso.slice(0, 10) : ""; }

  async function api(method, path, body) {
    const init = { method: method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch("/api/v1/users/" + path, init);
    let json = null;
    try { json = await r.json(); } catch (e) { json = null; }
    return { status: r.status, body: json };
  }

  function showFriends(list) {
    const tbody = $("friends");
    tbody.replaceChildren();
    $("friends-count").textContent = String(list.length);
    if (list.length === 0) return emptyRow(tbody, 3, "Nobody yet: share your link!");
    for (const f of list) {
      const tr = document.createElement("tr");
      tr.dataset.user = f.user;
      cell(tr, f.user, "user");
      cell(tr, day(f.joined_at));
      cell(tr, f.plan === "paid" ? "Subscribed" : "Free");
      tbody.appendChild(tr);
    }
  }

  function showRewards(list) {
    const tbody = $("rewards");
    tbody.replaceChildren();
    $("rewards-count").textContent = String(list.length);
    if (list.length === 0) return emptyRow(tbody, 4, "No rewards yet");
    for (const w of list) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(w.id);
      cell(tr, w.label, "label");
      cell(tr, w.role === "referrer" ? "Inviting " + w.referred_user : "Joining through an invite");
      cell(tr, day(w.date_credited));
      const status = w.status;
      const badge = document.createElement("span");
      badge.className = "badge " + status;
      badge.textContent = STATUS_TEXT[status] || status;
      const td = cell(tr, "", "status");
      td.dataset.status = status;
      td.appendChild(badge);
      tbody.appendChild(tr);
    }
  }

  async function load(user) {
    $("who").textContent = "Signed in as " + user;
    const id = encodeURIComponent(user);
    // The user's primary code, created on their first visit (the API
    // answers the existing one afterwards), with the link to share.
    const code = await api("POST", id + "/codes", { label: "" });
    if (code.status !== 200) throw new Error((code.body && code.body.error) || "could not get your link");
    $("link").value = code.body.link || code.body.code;
    $("share").hidden = false;
    const [me, friends, rewards] = await Promise.all([api("GET", id), api("GET", id + "/friends"),
                                                      api("GET", id + "/rewards")]);
    if (me.status !== 200 || friends.status !== 200 || rewards.status !== 200)
      throw new Error("could not load your invites");
    showFriends(friends.body.friends);
    showRewards(rewards.body.rewards);
    $("available-count").textContent = String(me.body.rewards.available);
    for (const s of ["summary", "friends-section", "rewards-section"]) $(s).hidden = false;
  }

  $("copy").addEventListener("click", async () => {
    const link = $("link");
    link.select();
    try {
      await navigator.clipboard.writeText(link.value);
      $("copied").textContent = "Copied!";
    } catch (e) {
      $("copied").textContent = "Press Ctrl+C to copy";
    }
  });

  const user = new URLSearchParams(location.search).get("user");
  if (!user) {
    $("pick").hidden = false;
    document.body.dataset.ready = "pick";
    return;
  }
  load(user).then(() => {
    document.body.dataset.ready = "1";
  }, (e) => {
    $("message").textContent = "Sorry, your invite page could not be loaded: " + e.message;
    $("message").className = "message failed";
    document.body.dataset.ready = "error";
  });
})();
