/*! kefu web widget: plain ES2017, no dependencies. Served at /widget.js. */
(function (window, document) {
  'use strict';
  if (window.AIChatbot && window.AIChatbot.kefu) return; // loaded twice: keep the first

  // The <script> that loaded us: its origin is the kefu server, its data-* are the options.
  var script = document.currentScript || (function () {
    var all = document.getElementsByTagName('script');
    for (var i = all.length - 1; i >= 0; i--) {
      if (/\/widget\.js(?:[?#]|$)/.test(all[i].src)) return all[i];
    }
    return null;
  })();
  var scriptOrigin = '';
  try {
    if (script && script.src) scriptOrigin = new URL(script.src, location.href).origin;
  } catch (e) { /* keep relative URLs */ }
  if (scriptOrigin === 'null') scriptOrigin = '';

  var I18N = {
    en: {
      title: 'Customer service', subtitle: 'We usually answer right away',
      greeting: 'Hi! How can I help you today?', placeholder: 'Type your question…',
      inputLabel: 'Your message', send: 'Send', open: 'Open chat', close: 'Close chat',
      handoff: 'A human agent will reply here', handoffSub: 'Keep this window open, replies appear below.',
      agent: 'Agent', bot: 'Assistant', sources: 'Sources', typing: 'Answering…',
      offline: 'Could not reach the server. Check your connection.',
      failed: 'Message not sent', retry: 'Retry', unread: 'new messages', earlier: 'Earlier messages',
    },
    zh: {
      title: '在线客服', subtitle: '通常即时回复',
      greeting: '您好！请问有什么可以帮您？', placeholder: '请输入您的问题…',
      inputLabel: '输入消息', send: '发送', open: '打开在线客服', close: '关闭对话',
      handoff: '已为您转接人工客服，请稍候', handoffSub: '请保持此窗口打开，客服回复会显示在下方。',
      agent: '人工客服', bot: '智能助手', sources: '参考来源', typing: '正在回答…',
      offline: '无法连接服务器，请检查网络。',
      failed: '消息未发送', retry: '重试', unread: '条新消息', earlier: '查看更早的消息',
    },
  };

  var ICON_CHAT = '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-4.5 3.6A.9.9 0 0 1 3 20.9V6a2 2 0 0 1 1-2zm3 5.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z"/></svg>';
  var ICON_CLOSE = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"><path fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" d="M6 6l12 12M18 6L6 18"/></svg>';
  var ICON_SEND = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"><path fill="currentColor" d="M3.4 20.4l17.45-7.48a1 1 0 0 0 0-1.84L3.4 3.6a.99.99 0 0 0-1.39.91L2 9.12c0 .5.37.93.87.99L17 12 2.87 13.88c-.5.07-.87.5-.87 1l.01 4.61c0 .71.73 1.2 1.39.91z"/></svg>';

  var uid = 0;

  function detectLang() {
    var l = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
    return /^zh/i.test(l) ? 'zh' : 'en';
  }

  function dim(v, dflt) {
    if (v == null || v === '') return dflt;
    return /^\d+(\.\d+)?$/.test(String(v)) ? v + 'px' : String(v);
  }

  function normalize(o) {
    o = o || {};
    var lang = o.lang || detectLang();
    if (!I18N[lang]) lang = /^zh/i.test(lang) ? 'zh' : 'en';
    var t = I18N[lang];
    var channel = o.channel || null;
    var css = o.css === false || o.css === 'false' ? false
      : (o.css || o.cssUrl || (scriptOrigin ? scriptOrigin + '/widget.css' : ''));
    return {
      apiEndpoint: o.apiEndpoint || (scriptOrigin ? scriptOrigin + '/api/chat' : '/api/chat'),
      channel: channel,
      lang: lang,
      title: o.title || t.title,
      subtitle: o.subtitle == null ? t.subtitle : o.subtitle,
      greeting: o.greeting == null ? t.greeting : o.greeting,
      placeholder: o.placeholder || t.placeholder,
      primaryColor: (o.theme && o.theme.primaryColor) || o.primaryColor || '#0070f3',
      position: o.position === 'bottom-left' ? 'bottom-left' : 'bottom-right',
      width: dim(o.width, '380px'),
      height: dim(o.height, '560px'),
      zIndex: o.zIndex == null ? 2147483000 : +o.zIndex,
      openOnLoad: o.openOnLoad === true || o.openOnLoad === 'true',
      initialQuestion: o.initialQuestion || '',
      fullscreenOnMobile: !(o.fullscreenOnMobile === false || o.fullscreenOnMobile === 'false'),
      css: css,
      storageKey: o.storageKey || 'kefu:' + (channel || 'default'),
      pollInterval: +o.pollInterval || 3000,
      stream: !(o.stream === false || o.stream === 'false'),
      showSources: !(o.showSources === false || o.showSources === 'false'),
      maxLength: +o.maxLength || 4000,
      // Messages per history page: the newest on load, older ones on request.
      historyPage: Math.min(Math.max(+o.historyPage || 100, 1), 500),
    };
  }

  // ---- tiny DOM helpers -------------------------------------------------------------------

  function h(tag, cls, attrs) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (attrs) for (var k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    return e;
  }
  function text(s) { return document.createTextNode(s); }

  // ---- safe rich text: every character becomes a text node; only the markup below makes
  // elements, and only http(s)/mailto links survive, and of those only links to the hosts the
  // server listed for the message (`link_hosts`: the knowledge's own hosts and the channel's
  // allow-list); any other link stays text. No innerHTML on anything we received.

  var INLINE = /\*\*([^*\n]+?)\*\*|`([^`\n]+)`|\[([^\]\n]+)\]\(\s*([^)\s]+)\s*\)|(https?:\/\/[^\s<>"'()[\]，。；：！？、）]+)/g;

  function safeHref(u, hosts) {
    u = String(u).trim();
    if (/^www\./i.test(u)) u = 'http://' + u;
    if (!/^(https?:\/\/|mailto:)/i.test(u)) return null;
    try {
      var url = new URL(u);
      var host = url.protocol === 'mailto:' ? url.pathname.split('@').pop() : url.hostname;
      if (!hosts || hosts.indexOf(String(host).toLowerCase()) < 0) return null;
      return url.href;
    } catch (e) { return null; }
  }

  function link(label, href) {
    var a = h('a', null, { href: href, target: '_blank', rel: 'noopener noreferrer' });
    a.textContent = label;
    return a;
  }

  function inline(src, parent, hosts) {
    var re = new RegExp(INLINE.source, 'g');
    var last = 0, m;
    while ((m = re.exec(src))) {
      if (m.index > last) parent.appendChild(text(src.slice(last, m.index)));
      var end = re.lastIndex;
      if (m[1] != null) {
        var b = h('strong');
        inline(m[1], b, hosts);
        parent.appendChild(b);
      } else if (m[2] != null) {
        var c = h('code');
        c.textContent = m[2];
        parent.appendChild(c);
      } else if (m[3] != null) {
        var href = safeHref(m[4], hosts);
        parent.appendChild(href ? link(m[3], href) : text(m[0]));
      } else {
        // A bare URL: keep trailing punctuation out of it.
        var url = m[5].replace(/[.,;:!?]+$/, '');
        end = m.index + url.length;
        re.lastIndex = end;
        var ok = safeHref(url, hosts);
        parent.appendChild(ok ? link(url, ok) : text(url));
      }
      last = end;
    }
    if (last < src.length) parent.appendChild(text(src.slice(last)));
  }

  function rich(src, parent, hosts) {
    var lines = String(src).replace(/\r\n?/g, '\n').split('\n');
    var para = null, list = null, m;
    for (var i = 0; i < lines.length; i++) {
      var raw = lines[i], line = raw.trim();
      if (!line) { para = null; list = null; continue; }
      if ((m = /^[-*•]\s+(.*)$/.exec(line)) || (m = /^(\d{1,3})[.)、]\s*(.+)$/.exec(line))) {
        var ordered = m.length === 3;
        var tag = ordered ? 'OL' : 'UL';
        if (!list || list.tagName !== tag) {
          list = h(tag.toLowerCase());
          if (ordered && m[1] !== '1') list.setAttribute('start', m[1]);
          parent.appendChild(list);
        }
        para = null;
        var li = h('li');
        inline(ordered ? m[2] : m[1], li, hosts);
        list.appendChild(li);
        continue;
      }
      if (list && /^\s{2,}/.test(raw)) { // continuation of the last list item
        list.lastChild.appendChild(text(' '));
        inline(line, list.lastChild, hosts);
        continue;
      }
      list = null;
      if ((m = /^#{1,6}\s+(.*)$/.exec(line))) {
        para = null;
        var p = h('p', 'kefu-h'), s = h('strong');
        inline(m[1], s, hosts);
        p.appendChild(s);
        parent.appendChild(p);
        continue;
      }
      if (para) para.appendChild(h('br'));
      else { para = h('p'); parent.appendChild(para); }
      inline(line, para, hosts);
    }
  }

  // ---- storage (private mode and sandboxed iframes throw: fall back to memory) -------------

  var memory = {};
  function load(key) {
    try { var v = window.localStorage.getItem(key); if (v != null) return JSON.parse(v); } catch (e) { /* ignore */ }
    return memory[key] == null ? null : JSON.parse(memory[key]);
  }
  function save(key, value) {
    var s = JSON.stringify(value);
    memory[key] = s;
    try { window.localStorage.setItem(key, s); } catch (e) { /* memory only */ }
  }
  function newSessionId() {
    var b = new Uint8Array(12);
    if (window.crypto && window.crypto.getRandomValues) window.crypto.getRandomValues(b);
    else for (var i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
    return 'w-' + Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
  }

  // ---- stylesheet --------------------------------------------------------------------------

  var cssReady = {};
  function injectCss(url) {
    if (!url) return Promise.resolve();
    if (cssReady[url]) return cssReady[url];
    var links = document.querySelectorAll('link[rel="stylesheet"]');
    for (var i = 0; i < links.length; i++) {
      if (links[i].href === new URL(url, location.href).href) return (cssReady[url] = Promise.resolve());
    }
    cssReady[url] = new Promise(function (resolve) {
      var l = h('link', null, { rel: 'stylesheet', href: url, 'data-kefu': 'css' });
      l.onload = l.onerror = function () { resolve(); };
      setTimeout(resolve, 4000);
      (document.head || document.documentElement).appendChild(l);
    });
    return cssReady[url];
  }

  // ---- network -----------------------------------------------------------------------------

  function HttpError(status, message) {
    this.status = status;
    this.message = message;
  }

  async function readSse(body, onDelta, tick, onRetract) {
    var reader = body.getReader(), dec = new TextDecoder(), buf = '', turn = null;
    for (;;) {
      var r = await reader.read();
      if (r.value) { buf += dec.decode(r.value, { stream: true }); tick(); }
      if (r.done) buf += dec.decode() + '\n\n';
      buf = buf.replace(/\r\n?/g, '\n');
      var at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        var block = buf.slice(0, at), ev = 'message', data = [];
        buf = buf.slice(at + 2);
        block.split('\n').forEach(function (l) {
          if (!l || l[0] === ':') return;
          var c = l.indexOf(':'), f = c < 0 ? l : l.slice(0, c), v = c < 0 ? '' : l.slice(c + 1);
          if (v[0] === ' ') v = v.slice(1);
          if (f === 'event') ev = v;
          else if (f === 'data') data.push(v);
        });
        if (!data.length) continue;
        var payload = JSON.parse(data.join('\n'));
        if (ev === 'delta') onDelta(payload.text || '', payload.link_hosts || []);
        else if (ev === 'retract') onRetract(payload.reason || '');
        else if (ev === 'turn') turn = payload;
        else if (ev === 'error') throw new HttpError(0, payload.error || 'error');
      }
      if (r.done) break;
    }
    if (!turn) throw new HttpError(0, null);
    return turn;
  }

  // ---- the widget --------------------------------------------------------------------------

  class AIChatbot {
    constructor(options) {
      this.options = normalize(options);
      this.t = I18N[this.options.lang];
      var key = this.options.storageKey;
      this.sessionId = (options && options.sessionId) || load(key + ':sid');
      if (!this.sessionId) { this.sessionId = newSessionId(); save(key + ':sid', this.sessionId); }
      var saved = load(key + ':history');
      if (!saved || saved.sessionId !== this.sessionId) saved = { messages: [], lastSeq: 0, handoff: null };
      this.messages = (saved.messages || []).map(function (m) {
        return { role: m.role, text: m.text, sources: m.sources || [], seq: m.seq || 0, at: m.at || 0, links: m.links || [] };
      });
      this.lastSeq = saved.lastSeq || 0;
      this.handoff = saved.handoff || { active: false, reason: null };
      this.busy = false;
      this.opened = false;
      this.unread = 0;
      this.el = null;
      this.mode = null;
      this._sentSinceLoad = false;
      this._pollTimer = null;
      this.hasMore = false; // older messages on the server than the ones restored
    }

    /** The inline chat panel (the seed API): append it anywhere. */
    render() {
      if (!this.el) this._build('inline');
      return this.el;
    }

    /** The floating launcher bubble + panel, appended to `target` (default: document.body). */
    mount(target) {
      if (!this.el) this._build('launcher');
      (target || document.body).appendChild(this.el);
      if (this.options.openOnLoad) this.open();
      return this;
    }

    open() {
      if (this.mode !== 'launcher') { this.input.focus(); return; }
      this.opened = true;
      this.panel.hidden = false;
      this.el.classList.add('kefu-open');
      this.launcher.setAttribute('aria-expanded', 'true');
      this.launcher.setAttribute('aria-label', this.t.close);
      this._setUnread(0);
      this._scroll(true);
      this.input.focus();
      this._first();
      if (!this.busy && !this.handoff.active) this._sync(false);
    }

    close() {
      if (this.mode !== 'launcher') return;
      this.opened = false;
      this.panel.hidden = true;
      this.el.classList.remove('kefu-open');
      this.launcher.setAttribute('aria-expanded', 'false');
      this.launcher.setAttribute('aria-label', this.t.open);
    }

    toggle() { if (this.opened) this.close(); else this.open(); }

    destroy() {
      clearTimeout(this._pollTimer);
      this._dead = true;
      if (this.el && this.el.parentNode) this.el.parentNode.removeChild(this.el);
    }

    /** Send `message` as the customer. Returns false when empty or a reply is pending. */
    send(message) {
      var msg = String(message == null ? '' : message).trim();
      if (!msg || this.busy) return false;
      if (msg.length > this.options.maxLength) msg = msg.slice(0, this.options.maxLength);
      this._sentSinceLoad = true;
      this._add({ role: 'user', text: msg, sources: [], seq: 0, at: Date.now() });
      this._scroll(true);
      this._ask(msg);
      return true;
    }

    // -- building --

    _build(mode) {
      var o = this.options, t = this.t, id = 'kefu-' + ++uid;
      this.mode = mode;
      var root = h('div', 'kefu-root kefu-mode-' + mode + (mode === 'launcher' ? ' kefu-pos-' + (o.position === 'bottom-left' ? 'left' : 'right') : '') +
        (o.fullscreenOnMobile ? ' kefu-mfs' : ''), { 'data-kefu-mode': mode, 'data-session': this.sessionId, lang: o.lang });
      root.style.setProperty('--kefu-primary', o.primaryColor);
      root.style.setProperty('--kefu-w', o.width);
      root.style.setProperty('--kefu-h', o.height);
      if (mode === 'launcher') root.style.zIndex = String(o.zIndex);
      if (o.css) {
        root.style.visibility = 'hidden'; // until our stylesheet is in, avoid a flash of raw markup
        injectCss(o.css).then(function () { root.style.visibility = ''; });
      }

      var panel = h('div', 'kefu-panel', {
        id: id + '-panel', role: mode === 'launcher' ? 'dialog' : 'region', 'aria-label': o.title, 'data-role': 'panel',
      });
      var head = h('div', 'kefu-header');
      var avatar = h('span', 'kefu-avatar', { 'aria-hidden': 'true' });
      avatar.innerHTML = ICON_CHAT; // constant markup
      var titles = h('div', 'kefu-titles');
      var title = h('div', 'kefu-title');
      title.textContent = o.title;
      titles.appendChild(title);
      if (o.subtitle) { var sub = h('div', 'kefu-subtitle'); sub.textContent = o.subtitle; titles.appendChild(sub); }
      head.appendChild(avatar);
      head.appendChild(titles);
      if (mode === 'launcher') {
        var x = h('button', 'kefu-close', { type: 'button', 'aria-label': t.close, title: t.close, 'data-role': 'close' });
        x.innerHTML = ICON_CLOSE;
        x.addEventListener('click', () => { this.close(); this.launcher.focus(); });
        head.appendChild(x);
      }
      panel.appendChild(head);

      var banner = h('div', 'kefu-banner', { role: 'status', 'data-role': 'handoff-banner' });
      banner.hidden = true;
      var dot = h('span', 'kefu-banner-dot', { 'aria-hidden': 'true' });
      var bt = h('div');
      var b1 = h('strong'); b1.textContent = t.handoff;
      var b2 = h('div', 'kefu-banner-sub'); b2.textContent = t.handoffSub;
      bt.appendChild(b1); bt.appendChild(b2);
      banner.appendChild(dot); banner.appendChild(bt);
      panel.appendChild(banner);

      var log = h('div', 'kefu-log', { role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': o.title, 'data-role': 'log', tabindex: '0' });
      panel.appendChild(log);

      var form = h('form', 'kefu-form', { 'data-role': 'form' });
      var label = h('label', 'kefu-sr', { for: id + '-input' });
      label.textContent = t.inputLabel;
      var input = h('textarea', 'kefu-input', {
        id: id + '-input', rows: '1', placeholder: o.placeholder, maxlength: String(o.maxLength),
        'data-role': 'input', autocomplete: 'off', enterkeyhint: 'send',
      });
      var sendBtn = h('button', 'kefu-send', { type: 'submit', 'aria-label': t.send, title: t.send, 'data-role': 'send' });
      sendBtn.innerHTML = ICON_SEND;
      form.appendChild(label); form.appendChild(input); form.appendChild(sendBtn);
      panel.appendChild(form);

      // IME: Enter that confirms a composition (pinyin, kana...) must not send.
      var composing = false;
      input.addEventListener('compositionstart', function () { composing = true; });
      input.addEventListener('compositionend', function () { composing = false; });
      input.addEventListener('blur', function () { composing = false; });
      input.addEventListener('keydown', (e) => {
        if (e.key !== 'Enter' && e.keyCode !== 13) return;
        if (e.isComposing || composing || e.keyCode === 229) return;
        if (e.shiftKey || e.altKey || e.ctrlKey || e.metaKey) return; // newline
        e.preventDefault();
        this._submit();
      });
      input.addEventListener('input', () => { this._grow(); this._updateSend(); });
      form.addEventListener('submit', (e) => { e.preventDefault(); this._submit(); });

      this.el = root; this.panel = panel; this.log = log; this.input = input;
      this.sendBtn = sendBtn; this.banner = banner;

      if (mode === 'launcher') {
        panel.hidden = true;
        panel.setAttribute('aria-modal', 'false');
        var btn = h('button', 'kefu-launcher', {
          type: 'button', 'aria-label': t.open, title: o.title, 'aria-expanded': 'false',
          'aria-controls': panel.id, 'data-role': 'launcher',
        });
        btn.innerHTML = ICON_CHAT + ICON_CLOSE;
        var badge = h('span', 'kefu-badge', { 'data-role': 'unread', 'aria-hidden': 'true' });
        badge.hidden = true;
        btn.appendChild(badge);
        btn.addEventListener('click', () => this.toggle());
        this.launcher = btn; this.badge = badge;
        root.addEventListener('keydown', (e) => {
          if ((e.key === 'Escape' || e.key === 'Esc') && this.opened) {
            e.stopPropagation();
            this.close();
            btn.focus();
          }
        });
        root.appendChild(panel);
        root.appendChild(btn);
      } else {
        root.appendChild(panel);
      }

      this._renderAll();
      this._showHandoff();
      this._updateSend();
      this._sync(true);
      if (mode === 'inline') setTimeout(() => this._first(), 0);
    }

    _first() {
      if (this._firstDone) return;
      this._firstDone = true;
      var q = this.options.initialQuestion;
      if (q && !this.messages.some(function (m) { return m.role === 'user'; })) this.send(q);
    }

    _grow() {
      var i = this.input;
      i.style.height = 'auto';
      i.style.height = Math.min(i.scrollHeight, 140) + 'px';
    }

    _updateSend() {
      if (!this.sendBtn) return;
      this.sendBtn.disabled = this.busy || !this.input.value.trim();
      this.log.setAttribute('aria-busy', this.busy ? 'true' : 'false');
    }

    _submit() {
      if (this.send(this.input.value)) {
        this.input.value = '';
        this._grow();
        this._updateSend();
      }
    }

    // -- messages --

    _renderAll() {
      this.log.textContent = '';
      if (this.hasMore) {
        // The server opened at the newest page: older messages come on request.
        var more = h('button', 'kefu-earlier', { type: 'button', 'data-role': 'earlier' });
        more.textContent = this.t.earlier;
        more.addEventListener('click', () => this._earlier());
        this.log.appendChild(more);
      } else if (this.options.greeting) {
        var g = this._node({ role: 'bot', text: this.options.greeting, sources: [] });
        g.setAttribute('data-role', 'greeting');
        this.log.appendChild(g);
      }
      this.messages.forEach((m) => { this.log.appendChild(this._node(m)); });
      this._scroll(true);
    }

    _node(m) {
      var role = /^(user|bot|agent|system)$/.test(m.role) ? m.role : 'system';
      var wrap = h('div', 'kefu-msg kefu-from-' + role, { 'data-role': 'message', 'data-from': role });
      if (m.seq) wrap.setAttribute('data-seq', String(m.seq));
      if (role === 'agent') {
        var who = h('div', 'kefu-who');
        who.textContent = this.t.agent;
        wrap.appendChild(who);
      }
      var bubble = h('div', 'kefu-bubble');
      if (role === 'user' || role === 'system') bubble.textContent = m.text;
      else rich(m.text, bubble, m.links || []);
      wrap.appendChild(bubble);
      if (this.options.showSources && m.sources && m.sources.length) wrap.appendChild(this._sources(m.sources));
      m.el = wrap;
      return wrap;
    }

    _sources(list) {
      var box = h('div', 'kefu-sources', { 'data-role': 'sources' });
      var lab = h('div', 'kefu-sources-label');
      lab.textContent = this.t.sources;
      var ul = h('ul');
      var seen = {};
      list.forEach(function (s) {
        var path = String(s.path || '');
        if (seen[path]) return;
        seen[path] = 1;
        var li = h('li', null, { 'data-role': 'source', title: path });
        var ti = h('span', 'kefu-src-title');
        ti.textContent = s.title || path;
        var pa = h('span', 'kefu-src-path');
        pa.textContent = path;
        li.appendChild(ti);
        li.appendChild(pa);
        ul.appendChild(li);
      });
      box.appendChild(lab);
      box.appendChild(ul);
      return box;
    }

    _add(m, el) {
      this.messages.push(m);
      var node = this._node(m);
      if (el && el.parentNode) {
        node.classList.add('kefu-settled'); // it was on screen already: no second fade-in
        el.parentNode.replaceChild(node, el);
      }
      else this.log.appendChild(node);
      this._persist();
      if (this.mode === 'launcher' && !this.opened && m.role !== 'user') this._setUnread(this.unread + 1);
      return m;
    }

    _persist() {
      var keep = this.messages.slice(-200).map(function (m) {
        return { role: m.role, text: m.text, sources: m.sources, seq: m.seq, at: m.at, links: m.links };
      });
      save(this.options.storageKey + ':history', {
        sessionId: this.sessionId, messages: keep, lastSeq: this.lastSeq, handoff: this.handoff,
      });
    }

    _scroll(force) {
      var l = this.log;
      if (!l) return;
      if (force || l.scrollHeight - l.scrollTop - l.clientHeight < 120) l.scrollTop = l.scrollHeight;
    }

    _setUnread(n) {
      this.unread = n;
      if (!this.badge) return;
      this.badge.hidden = !n;
      this.badge.textContent = n > 9 ? '9+' : String(n);
      this.launcher.setAttribute('aria-label', n ? this.t.open + ' (' + n + ' ' + this.t.unread + ')' : (this.opened ? this.t.close : this.t.open));
    }

    _setHandoff(state) {
      var was = this.handoff.active;
      this.handoff = { active: !!(state && state.active), reason: (state && state.reason) || null };
      this._showHandoff();
      this._persist();
      if (this.handoff.active && !was) this._scroll(true);
      this._schedulePoll();
    }

    _showHandoff() {
      if (!this.banner) return;
      this.banner.hidden = !this.handoff.active;
      this.el.setAttribute('data-handoff', this.handoff.active ? 'true' : 'false');
    }

    // -- talking to the server --

    async _ask(msg) {
      this.busy = true;
      this._updateSend();
      var t = this.t, streamed = '';
      var pending = h('div', 'kefu-msg kefu-from-bot kefu-pending', { 'data-role': 'pending', 'data-from': 'bot' });
      var bubble = h('div', 'kefu-bubble');
      var dots = h('span', 'kefu-typing', { 'aria-label': t.typing, role: 'img' });
      dots.appendChild(h('i')); dots.appendChild(h('i')); dots.appendChild(h('i'));
      bubble.appendChild(dots);
      pending.appendChild(bubble);
      this.log.appendChild(pending);
      this._scroll(true);
      try {
        var hosts = [], retracted = false;
        var turn = await this._post(msg, (d, linkHosts) => {
          streamed += d;
          hosts = hosts.concat(linkHosts);
          bubble.textContent = '';
          rich(streamed, bubble, hosts);
          this._scroll(false);
        }, () => {
          // The server withdrew what it showed (a sentence failed its check): clear it; the
          // replacement follows.
          streamed = '';
          hosts = [];
          retracted = true;
          bubble.textContent = '';
          bubble.appendChild(dots);
        });
        if (turn.reply) {
          var m = this._add({ role: 'bot', text: turn.reply, sources: turn.sources || [], seq: 0, at: Date.now(), links: turn.link_hosts || [] }, pending);
          if (streamed) m.el.setAttribute('data-streamed', 'true'); // arrived as server-sent deltas
          if (retracted) m.el.setAttribute('data-retracted', 'true');
        } else if (pending.parentNode) {
          pending.parentNode.removeChild(pending);
        }
        this._setHandoff(turn.handoff);
        this._scroll(false);
      } catch (err) {
        if (pending.parentNode) pending.parentNode.removeChild(pending);
        this._error(err, msg);
      } finally {
        this.busy = false;
        this._updateSend();
      }
    }

    async _post(msg, onDelta, onRetract) {
      var o = this.options, ctrl = window.AbortController ? new AbortController() : null, timer = null;
      // Give up when nothing arrives for 60 s; each streamed chunk re-arms the timer.
      var tick = function () {
        clearTimeout(timer);
        if (ctrl) timer = setTimeout(function () { ctrl.abort(); }, 60000);
      };
      tick();
      var body = { session_id: this.sessionId, message: msg };
      if (o.channel) body.channel = o.channel;
      try {
        var res = await fetch(o.apiEndpoint, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: o.stream ? 'text/event-stream' : 'application/json' },
          body: JSON.stringify(body),
          credentials: 'omit',
          signal: ctrl ? ctrl.signal : undefined,
        });
        if (!res.ok) {
          var err = null;
          try { err = (await res.json()).error; } catch (e) { /* not JSON */ }
          throw new HttpError(res.status, err);
        }
        var ct = res.headers.get('content-type') || '';
        if (ct.indexOf('text/event-stream') >= 0 && res.body && res.body.getReader) return await readSse(res.body, onDelta, tick, onRetract || function () {});
        return await res.json();
      } finally {
        clearTimeout(timer);
      }
    }

    _error(err, msg) {
      var t = this.t;
      var row = h('div', 'kefu-error', { role: 'alert', 'data-role': 'error' });
      var p = h('span');
      var detail = err instanceof HttpError && err.message ? err.message : t.offline;
      p.textContent = t.failed + ': ' + detail;
      var retry = h('button', 'kefu-retry', { type: 'button', 'data-role': 'retry' });
      retry.textContent = t.retry;
      retry.addEventListener('click', () => {
        if (this.busy) return;
        if (row.parentNode) row.parentNode.removeChild(row);
        this._ask(msg);
      });
      row.appendChild(p);
      row.appendChild(retry);
      this.log.appendChild(row);
      this._scroll(true);
    }

    _historyUrl(query) {
      var base = new URL(this.options.apiEndpoint, location.href);
      base.pathname = base.pathname.replace(/\/+$/, '') + '/' + encodeURIComponent(this.sessionId) + '/messages';
      // No `after`: the newest page (a restore); `after`: what came since (a poll).
      base.search = query || (this._replaceNext ? '?limit=' + this.options.historyPage : '?after=' + this.lastSeq);
      if (this.options.channel) base.search += '&channel=' + encodeURIComponent(this.options.channel);
      return base.href;
    }

    /** Fetch what the server has: on load (merge or restore history) and while a human owns the chat. */
    async _sync(initial) {
      if (this._syncing || this._dead) return;
      this._syncing = true;
      this._replaceNext = initial;
      try {
        var res = await fetch(this._historyUrl(), { credentials: 'omit', headers: { Accept: 'application/json' } });
        if (!res.ok) return;
        var hist = await res.json();
        var list = (hist.messages || []).slice().sort(function (a, b) { return a.seq - b.seq; });
        if (initial) this.hasMore = !!hist.has_more;
        if (initial && !this._sentSinceLoad && list.length) this._restore(list);
        else this._merge(list);
        if (hist.handoff) this._setHandoff(hist.handoff);
      } catch (e) {
        // Offline: keep what we show; the next poll tries again.
      } finally {
        this._syncing = false;
        this._replaceNext = false;
        this._schedulePoll();
      }
    }

    /** The page of messages before the first one shown (the history opens at the newest). */
    async _earlier() {
      var first = this.messages.filter(function (m) { return m.seq; })[0];
      if (!first || this._loadingEarlier) return;
      this._loadingEarlier = true;
      try {
        var res = await fetch(this._historyUrl('?before=' + first.seq + '&limit=' + this.options.historyPage),
          { credentials: 'omit', headers: { Accept: 'application/json' } });
        if (!res.ok) return;
        var hist = await res.json();
        var older = (hist.messages || []).filter(function (m) { return m.seq < first.seq; })
          .sort(function (a, b) { return a.seq - b.seq; })
          .map(function (m) { return { role: m.role, text: m.text, sources: m.sources || [], seq: m.seq, at: m.at_ms || 0, links: m.link_hosts || [] }; });
        this.messages = older.concat(this.messages);
        this.hasMore = !!hist.has_more;
        var fromBottom = this.log.scrollHeight - this.log.scrollTop;
        this._renderAll();
        this.log.scrollTop = this.log.scrollHeight - fromBottom; // keep what was in view in place
      } catch (e) {
        // Offline: the button stays for another try.
      } finally {
        this._loadingEarlier = false;
      }
    }

    _restore(list) {
      // The server's record is authoritative once it answers: it also holds what agents said
      // while this page was closed.
      this.messages = list.map(function (m) {
        return { role: m.role, text: m.text, sources: m.sources || [], seq: m.seq, at: m.at_ms || 0, links: m.link_hosts || [] };
      });
      this.lastSeq = list[list.length - 1].seq;
      this._renderAll();
      this._persist();
    }

    _merge(list) {
      var added = false;
      list.forEach((m) => {
        if (m.seq <= this.lastSeq) return;
        this.lastSeq = m.seq;
        var mine = null;
        if (m.role === 'user' || m.role === 'bot') {
          // What this page sent and showed has no seq yet: pair it instead of showing it twice.
          var open = this.messages.filter(function (x) { return !x.seq && x.role === m.role; });
          mine = open.filter(function (x) { return x.text === m.text; })[0] || open[0] || null;
        }
        if (mine) {
          mine.seq = m.seq;
          if (mine.el) mine.el.setAttribute('data-seq', String(m.seq));
          return;
        }
        this._add({ role: m.role, text: m.text, sources: m.sources || [], seq: m.seq, at: m.at_ms || 0, links: m.link_hosts || [] });
        added = true;
      });
      this._persist();
      if (added) this._scroll(false);
    }

    _schedulePoll() {
      clearTimeout(this._pollTimer);
      if (this._dead || !this.handoff.active) return;
      this._pollTimer = setTimeout(() => this._sync(false), this.options.pollInterval);
    }
  }

  AIChatbot.kefu = true;
  AIChatbot.version = '0.1.0';
  // `hosts`: the hosts whose links may render as links (others stay text).
  AIChatbot.renderText = function (src, hosts) { var d = h('div'); rich(src, d, hosts || []); return d; };
  window.AIChatbot = AIChatbot;

  // ---- one-line embed: <script src=".../widget.js" data-channel="site" async></script> -------

  function fromDataset(ds) {
    var o = {};
    ['apiEndpoint', 'channel', 'lang', 'title', 'subtitle', 'greeting', 'placeholder', 'primaryColor', 'position',
      'width', 'height', 'zIndex', 'openOnLoad', 'initialQuestion', 'fullscreenOnMobile', 'css', 'storageKey',
      'pollInterval', 'stream', 'showSources', 'historyPage'].forEach(function (k) { if (ds[k] != null) o[k] = ds[k]; });
    return o;
  }

  if (script && script.dataset && Object.keys(script.dataset).length && script.dataset.launcher !== 'false') {
    var start = function () {
      AIChatbot.embedded = new AIChatbot(fromDataset(script.dataset)).mount();
    };
    if (document.body) start();
    else document.addEventListener('DOMContentLoaded', start);
  }
  try { window.dispatchEvent(new CustomEvent('kefu:ready')); } catch (e) { /* old browsers */ }
})(window, document);
