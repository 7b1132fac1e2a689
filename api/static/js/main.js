// StoryMimi's web pages: one script for all of them, picked by <body data-page="...">. No build step, no
// libraries. Every API call goes through `api()`, which turns an error answer into an ApiError carrying the
// API's `detail` (and, for a 503, the `server` that is down); each page shows it instead of throwing.
// Text from the API is only ever set as textContent, never parsed as HTML.
"use strict";

const POLL_MS = 2000; // story-status.html: how often the status is asked again
const REDIRECT_MS = 3000; // delete-user.html: how long the confirmation shows before going home
const TERMINAL = new Set(["completed", "failed"]); // a story in one of these never changes again
const STATUS_NOTES = {
  pending: "Waiting for a worker to start it…",
  processing: "Being written, illustrated and narrated…",
  completed: "Done.",
  failed: "The story could not be made.",
};

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the API could not be reached
    this.body = body;
  }

  get permanent() {
    // A 4xx will answer the same next time (408 and 429 are worth retrying); a 5xx or no answer may not.
    return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
  }
}

// --- the API ---------------------------------------------------------------------------------------------

function errorText(status, body) {
  const detail = body && body.detail;
  let text;
  if (Array.isArray(detail)) {
    // FastAPI's 422: [{loc: ["body", "num_scenes"], msg: "..."}, ...]
    text = detail.map((e) => `${fieldName(e.loc)}: ${e.msg}`).join("\n");
  } else if (typeof detail === "string" && detail) {
    text = detail;
  } else {
    text = `The API answered ${status} without saying why.`;
  }
  if (body && typeof body.server === "string") {
    text += ` (server down: ${body.server})`;
  }
  return text;
}

function fieldName(loc) {
  const parts = (Array.isArray(loc) ? loc : []).filter((p) => !["body", "query", "path"].includes(p));
  return parts.join(".") || "request";
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch (err) {
    throw new ApiError(`Could not reach the API (${err.message}). Check the connection and try again.`, 0, null);
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null; // not JSON (a proxy's error page, say): errorText says what status came
    }
  }
  if (!response.ok) {
    throw new ApiError(errorText(response.status, data), response.status, data);
  }
  return data;
}

// --- small helpers -----------------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

const storage = {
  // localStorage throws in some privacy modes; the pages then just do not remember the user.
  get(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch {
      /* not remembered */
    }
  },
  remove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch {
      /* nothing to forget */
    }
  },
};

function showMessage(kind, text) {
  const box = $("#message");
  box.className = `message ${kind}`;
  box.textContent = text;
  box.hidden = false;
}

function showError(err) {
  showMessage("error", err instanceof Error ? err.message : String(err));
}

function clearMessage() {
  const box = $("#message");
  box.hidden = true;
  box.textContent = "";
}

function queryId() {
  const id = new URLSearchParams(window.location.search).get("id");
  return id ? id.trim() : "";
}

function pageUrl(page, id) {
  return `/static/${page}?id=${encodeURIComponent(id)}`;
}

function formatDate(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleDateString(undefined, { year: "numeric", month: "long", day: "numeric" });
}

function setBadge(element, status) {
  const name = String(status || "unknown").toLowerCase();
  element.textContent = name;
  element.className = `badge badge-${name}`;
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// Runs `work` with the form's submit button disabled and relabelled; the label comes back whatever happens.
async function whileSubmitting(form, busyLabel, work) {
  const button = form.querySelector('button[type="submit"]');
  const originalText = button.textContent; // outside the try: the old page's catch could not see it
  button.disabled = true;
  button.textContent = busyLabel;
  clearMessage();
  let keepBusy = false;
  try {
    keepBusy = await work();
  } catch (err) {
    showError(err);
  } finally {
    if (!keepBusy) {
      button.disabled = false;
      button.textContent = originalText;
    }
  }
}

// --- create-story.html -------------------------------------------------------------------------------------

function initCreateStory() {
  const form = $("#story-form");
  const remembered = storage.get("currentUserId");
  if (remembered && !form.elements.user_id.value) form.elements.user_id.value = remembered;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    whileSubmitting(form, "Creating…", async () => {
      // The old page's body, field for field.
      const story = await api("POST", "/stories/", {
        title: data.get("title"),
        prompt: data.get("prompt"),
        style: data.get("style"),
        num_scenes: parseInt(data.get("num_scenes"), 10),
        user_id: data.get("user_id"),
      });
      window.location.assign(pageUrl("story-status.html", story.story_id));
      return true; // leaving the page: the button stays busy
    });
  });
}

// --- story-status.html -------------------------------------------------------------------------------------

function initStoryStatus() {
  const id = queryId();
  if (!id) {
    showMessage("error", "No story id given: open this page as story-status.html?id=<story id>.");
    return;
  }
  $("#story-id").textContent = id;
  $("#status-card").hidden = false;
  const note = $("#status-note");

  async function poll() {
    try {
      const status = await api("GET", `/stories/${encodeURIComponent(id)}/status`);
      clearMessage();
      renderStatus(status);
      if (TERMINAL.has(String(status.status).toLowerCase())) return; // done: no more polling
    } catch (err) {
      showError(err);
      if (!(err instanceof ApiError) || err.permanent) {
        note.textContent = "Stopped checking.";
        return;
      }
      note.textContent = `Trying again in ${POLL_MS / 1000} seconds…`;
    }
    window.setTimeout(poll, POLL_MS);
  }
  poll();
}

function renderStatus(status) {
  const name = String(status.status).toLowerCase();
  setBadge($("#status"), name);
  $("#scenes").textContent = `${status.scenes_done} / ${status.scenes_total}`;
  const progress = $("#progress");
  progress.max = Math.max(status.scenes_total, 1);
  progress.value = name === "completed" ? progress.max : status.scenes_done;
  $("#status-note").textContent = STATUS_NOTES[name] || "";
  const error = $("#status-error");
  error.hidden = !(name === "failed" && status.error);
  error.textContent = status.error || "";
  const view = $("#view-story");
  if (name === "completed") view.href = pageUrl("story.html", status.story_id);
  view.hidden = name !== "completed";
}

// --- story.html --------------------------------------------------------------------------------------------

async function initStory() {
  const id = queryId();
  if (!id) {
    showMessage("error", "No story id given: open this page as story.html?id=<story id>.");
    return;
  }
  try {
    renderStory(await api("GET", `/stories/${encodeURIComponent(id)}`));
  } catch (err) {
    showError(err);
  }
}

function renderStory(story) {
  const title = story.title || "Untitled story";
  document.title = `${title} · StoryMimi`;
  $("#story-title").textContent = title;
  $("#story-date").textContent = formatDate(story.created_at);
  $("#story-user").href = pageUrl("user-stories.html", story.user_id);
  const status = String(story.status).toLowerCase();
  if (status !== "completed") {
    setBadge($("#story-status"), status);
    $("#story-status-link").href = pageUrl("story-status.html", story.story_id);
    $("#story-status-note").hidden = false;
  }
  const scenes = [...story.scenes].sort((a, b) => a.sequence - b.sequence);
  const list = $("#scenes");
  list.replaceChildren(...scenes.map(sceneView));
  if (!scenes.length) list.append(element("p", { className: "muted", textContent: "No scenes yet." }));
  $("#story").hidden = false;
}

function sceneView(scene, index) {
  const label = `Scene ${index + 1}`;
  const parts = [element("h2", { textContent: scene.title ? `${label}: ${scene.title}` : label })];
  if (scene.image_url) parts.push(element("img", { src: scene.image_url, alt: label, width: 512, height: 512 }));
  parts.push(element("p", { className: "scene-text", textContent: scene.text }));
  if (scene.audio_url) {
    // No `type`: the narration is WAV from the offline provider and MP3 from ElevenLabs.
    parts.push(element("audio", { controls: true, preload: "metadata", src: scene.audio_url }));
  }
  return element("section", { className: "scene" }, parts);
}

// --- create-user.html --------------------------------------------------------------------------------------

function initCreateUser() {
  const form = $("#user-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    whileSubmitting(form, "Creating…", async () => {
      const user = await api("POST", "/users/", { email: data.get("email"), username: data.get("username") });
      storage.set("currentUserId", user.user_id);
      window.location.assign("/static/create-story.html");
      return true;
    });
  });
}

// --- user-stories.html -------------------------------------------------------------------------------------

async function initUserStories() {
  const lookup = $("#user-lookup");
  const id = queryId() || storage.get("currentUserId") || "";
  lookup.elements.id.value = id;
  lookup.hidden = false;
  lookup.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.assign(pageUrl("user-stories.html", lookup.elements.id.value.trim()));
  });
  if (!id) {
    showMessage("info", "Enter a user id to see that user's stories.");
    return;
  }
  const path = `/users/${encodeURIComponent(id)}`;
  const [user, stories] = await Promise.allSettled([api("GET", path), api("GET", `${path}/stories`)]);
  const problems = [];
  if (user.status === "fulfilled") {
    renderUser(user.value);
  } else if (user.reason instanceof ApiError && user.reason.status === 404) {
    problems.push(`No account has the id ${id}; stories made under that id are still listed.`);
  } else {
    problems.push(user.reason.message);
  }
  if (stories.status === "fulfilled") {
    renderStoryList(stories.value);
  } else {
    problems.push(stories.reason.message);
  }
  if (problems.length) showMessage("error", problems.join("\n"));
}

function renderUser(user) {
  $("#user-name").textContent = user.display_name || "(no name)";
  $("#user-email").textContent = user.email;
  $("#user-id").textContent = user.user_id;
  $("#user-card").hidden = false;
}

function renderStoryList(stories) {
  $("#no-stories").hidden = stories.length > 0;
  $("#stories").replaceChildren(...stories.map(storyItem));
}

function storyItem(story) {
  const status = String(story.status).toLowerCase();
  const badge = element("span");
  setBadge(badge, status);
  const link =
    status === "completed"
      ? element("a", { href: pageUrl("story.html", story.story_id), textContent: "View" })
      : element("a", { href: pageUrl("story-status.html", story.story_id), textContent: "Check status" });
  return element("li", { className: "story" }, [
    element("span", { className: "story-title", textContent: story.title || "Untitled story" }),
    badge,
    element("span", { className: "muted", textContent: formatDate(story.created_at) }),
    link,
  ]);
}

// --- delete-user.html --------------------------------------------------------------------------------------

function initDeleteUser() {
  const form = $("#delete-form");
  const remembered = storage.get("currentUserId");
  if (remembered && !form.elements.user_id.value) form.elements.user_id.value = remembered;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = form.elements.user_id.value.trim();
    const email = form.elements.email.value.trim();
    if (!form.elements.confirm.checked) {
      showMessage("error", "Tick the box to confirm that the account is to be deleted.");
      return;
    }
    if (!window.confirm(`Delete the account ${userId} and all its stories? This cannot be undone.`)) return;
    whileSubmitting(form, "Deleting…", async () => {
      const query = new URLSearchParams({ user_id: userId, email });
      const result = await api("DELETE", `/users/delete-account?${query}`);
      if (storage.get("currentUserId") === userId) storage.remove("currentUserId");
      const count = result.stories_deleted;
      showMessage("success", `Account deleted, with ${count} ${count === 1 ? "story" : "stories"}. Going home…`);
      form.reset();
      window.setTimeout(() => window.location.assign("/static/index.html"), REDIRECT_MS);
      return true;
    });
  });
}

// --- start -------------------------------------------------------------------------------------------------

const PAGES = {
  "create-story": initCreateStory,
  "story-status": initStoryStatus,
  story: initStory,
  "create-user": initCreateUser,
  "user-stories": initUserStories,
  "delete-user": initDeleteUser,
};

const init = PAGES[document.body.dataset.page];
if (init) {
  Promise.resolve()
    .then(init)
    .catch((err) => showError(err));
}
