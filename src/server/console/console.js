/*! kefu agent console: plain ES2017, no build step, no dependencies. Served at /agent/console.js.
 *
 * One page: the login, the live queue (server-sent events from /agent/api/events), and one
 * conversation at a time (#/c/{channel}/{conversation}, the deep link handoff notices carry).
 * Everything the server says is put in with textContent, never as HTML. State-changing calls
 * send the session's CSRF token in X-CSRF-Token, with a JSON body.
 */
(function () {
  'use strict';

  var I18N = {
    en: {
      title: 'Agent console', agentId: 'Agent ID', password: 'Password', logIn: 'Log in', logOut: 'Log out',
      wrongPassword: 'Wrong agent ID or password.', paused: 'Too many wrong passwords. Try again in {s} s.',
      noAgents: 'No agents are configured yet: add [[agents]] to the config (see kefu hash-password).',
      fillBoth: 'Enter your agent ID and password.', offline: 'Cannot reach the server.',
      queue: 'Queue', all: 'All', mine: 'Mine', unclaimed: 'Unclaimed', allChannels: 'All channels',
      emptyQueue: 'No one is waiting.', pick: 'Pick a conversation from the queue.',
      open: 'open', waitingCount: 'unclaimed', mineCount: 'mine', firstReplyMedian: 'first reply',
      waiting: 'waiting {t}', claimedBy: '{name} has it', yours: 'yours', youHaveIt: 'you have it', free: 'unclaimed',
      claim: 'Claim', release: 'Hand back to bot', close: 'Close', back: 'Back to the queue',
      closeTitle: 'Close the conversation', note: 'Resolution note', cancel: 'Cancel', confirmClose: 'Close it',
      noteRequired: 'Write what was done.', send: 'Send', reply: 'Reply',
      replyPlaceholder: 'Write a reply… Enter sends, Shift+Enter starts a new line',
      claimFirst: 'Claim this conversation to reply.', heldBy: '{name} is handling this conversation.',
      withBot: 'The bot answers this conversation.', closedBy: 'Closed by {name}: {note}', releasedBy: 'Handed back to the bot by {name}.',
      canned: 'Canned replies…', earlier: 'Load earlier messages',
      queued: 'queued', retrying: 'retrying ({n}): {why}', sent: 'sent', failed: 'failed: {why}',
      customer: 'Customer', bot: 'Bot', agent: 'Agent', system: 'System',
      intent: 'Wants', order: 'Order', urgency: 'Urgency', sentiment: 'Mood', sources: 'Bot used',
      stats: 'Numbers since start', firstReply: 'Time to first human reply', median: 'median', p90: '90th percentile',
      answered: 'handoffs answered', byReason: 'Handoffs by reason', ended: 'Ended', none: 'none yet',
      sound: 'Sound for new handoffs', soundOn: 'Sound on', soundOff: 'Sound off',
      justNow: 'just now', minutes: '{n} min', hours: '{h} h {m} min', days: '{d} d',
      noteClaimed: '{name} claimed the conversation', noteReleased: '{name} handed it back to the bot',
      noteReleasedBot: 'Handed back to the bot', noteClosed: '{name} closed it: {note}', noteClosedBot: 'Closed: {note}',
      claimedNow: 'You claimed this conversation.', lostClaim: '{name} claimed it first.',
      released: 'Handed back to the bot.', closed: 'Conversation closed.', failedAction: 'Did not work: {why}',
      sessionEnded: 'Your session ended. Please log in again.', newHandoff: 'New handoff: {who}',
      reasons: {
        human_requested: 'Asked for a human', keyword: 'Used a watched word', complaint_urgent: 'Urgent complaint',
        very_negative: 'Very upset', low_confidence: 'Bot was unsure', no_knowledge: 'Not in the knowledge base',
        unresolved: 'Still unresolved after several answers', business_action: 'Refund or cancellation to finish',
        sensitive: 'Sensitive content', compliance: 'Answer failed the compliance check',
        upstream_failure: 'Model unavailable', other: 'Unclear request',
      },
      intents: { query: 'a question answered', complaint: 'to complain', refund: 'a refund', cancel: 'to cancel', praise: 'to say thanks', other: 'unclear' },
      levels: { high: 'high', medium: 'medium', low: 'low', positive: 'positive', neutral: 'neutral', negative: 'negative', very_negative: 'very negative' },
      kinds: { web: 'Web', wecom: 'WeCom', dingtalk: 'DingTalk', wecom_kf: 'WeChat KF' },
      endedHow: { released: 'handed back', closed: 'closed' },
    },
    zh: {
      title: '客服工作台', agentId: '客服账号', password: '密码', logIn: '登录', logOut: '退出',
      wrongPassword: '账号或密码错误。', paused: '密码错误次数过多，请 {s} 秒后再试。',
      noAgents: '尚未配置客服账号：请在配置文件中添加 [[agents]]（见 kefu hash-password）。',
      fillBoth: '请输入账号和密码。', offline: '无法连接服务器。',
      queue: '待处理', all: '全部', mine: '我的', unclaimed: '未认领', allChannels: '全部渠道',
      emptyQueue: '暂无等待中的客户。', pick: '从左侧选择一个会话。',
      open: '进行中', waitingCount: '未认领', mineCount: '我的', firstReplyMedian: '首次回复',
      waiting: '已等待 {t}', claimedBy: '{name} 处理中', yours: '我的', youHaveIt: '由我处理', free: '未认领',
      claim: '认领', release: '交还机器人', close: '结束会话', back: '返回列表',
      closeTitle: '结束会话', note: '处理结果', cancel: '取消', confirmClose: '结束',
      noteRequired: '请填写处理结果。', send: '发送', reply: '回复',
      replyPlaceholder: '输入回复… Enter 发送，Shift+Enter 换行',
      claimFirst: '认领该会话后即可回复。', heldBy: '{name} 正在处理该会话。',
      withBot: '该会话由机器人接待。', closedBy: '{name} 已结束：{note}', releasedBy: '{name} 已交还机器人。',
      canned: '快捷回复…', earlier: '加载更早的消息',
      queued: '排队中', retrying: '重试中（{n}）：{why}', sent: '已送达', failed: '发送失败：{why}',
      customer: '客户', bot: '机器人', agent: '客服', system: '系统',
      intent: '诉求', order: '订单', urgency: '紧急度', sentiment: '情绪', sources: '机器人参考',
      stats: '启动以来的统计', firstReply: '首次人工回复用时', median: '中位数', p90: '90 分位',
      answered: '已回复的转人工', byReason: '转人工原因', ended: '已结束', none: '暂无',
      sound: '新会话提示音', soundOn: '提示音：开', soundOff: '提示音：关',
      justNow: '刚刚', minutes: '{n} 分钟', hours: '{h} 小时 {m} 分钟', days: '{d} 天',
      noteClaimed: '{name} 认领了会话', noteReleased: '{name} 将会话交还机器人',
      noteReleasedBot: '会话已交还机器人', noteClosed: '{name} 结束了会话：{note}', noteClosedBot: '会话已结束：{note}',
      claimedNow: '已认领该会话。', lostClaim: '{name} 已先认领。',
      released: '已交还机器人。', closed: '会话已结束。', failedAction: '操作失败：{why}',
      sessionEnded: '登录已过期，请重新登录。', newHandoff: '新的转人工：{who}',
      reasons: {
        human_requested: '客户要求人工', keyword: '触发关注词', complaint_urgent: '紧急投诉',
        very_negative: '客户情绪激动', low_confidence: '机器人把握不足', no_knowledge: '知识库中没有答案',
        unresolved: '多轮未解决', business_action: '退款/取消待处理',
        sensitive: '敏感内容', compliance: '回答未通过合规检查',
        upstream_failure: '模型不可用', other: '诉求不明确',
      },
      intents: { query: '咨询问题', complaint: '投诉', refund: '退款', cancel: '取消订单', praise: '表扬', other: '不明确' },
      levels: { high: '高', medium: '中', low: '低', positive: '积极', neutral: '平静', negative: '不满', very_negative: '非常不满' },
      kinds: { web: '网页', wecom: '企业微信', dingtalk: '钉钉', wecom_kf: '微信客服' },
      endedHow: { released: '交还机器人', closed: '已结束' },
    },
  };

  var LANG_KEY = 'kefu.console.lang';
  var SOUND_KEY = 'kefu.console.sound';
  var PAGE = 50;

  var S = {
    lang: 'en',
    me: null, csrf: null, channels: [], agents: {}, canned: [],
    filter: { channel: '', owner: 'all' },
    queue: [], counts: { open: 0, unclaimed: 0, mine: 0 }, stats: null,
    skew: 0, // server clock minus ours, from now_ms
    conv: null, // { channel, conversation, data, messages, hasMore }
    events: null, timers: {}, sound: true, audio: null, started: false, sending: false,
  };

  // ---- small helpers ------------------------------------------------------------------------

  function $(role) { return document.querySelector('[data-role="' + role + '"]'); }
  function $$(role) { return Array.prototype.slice.call(document.querySelectorAll('[data-role="' + role + '"]')); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function t(key, vars) {
    var dict = I18N[S.lang] || I18N.en;
    var s = key.split('.').reduce(function (o, k) { return o && o[k]; }, dict);
    if (s == null) s = key.split('.').reduce(function (o, k) { return o && o[k]; }, I18N.en);
    if (s == null) s = key.split('.').pop();
    return String(s).replace(/\{(\w+)\}/g, function (m, k) { return vars && vars[k] != null ? vars[k] : m; });
  }
  function debounce(name, ms, fn) {
    clearTimeout(S.timers[name]);
    S.timers[name] = setTimeout(fn, ms);
  }
  function serverNow() { return Date.now() + S.skew; }
  function duration(ms) {
    var min = Math.floor(Math.max(0, ms) / 60000);
    if (min < 1) return t('justNow');
    if (min < 60) return t('minutes', { n: min });
    if (min < 48 * 60) return t('hours', { h: Math.floor(min / 60), m: min % 60 });
    return t('days', { d: Math.floor(min / 1440) });
  }
  function seconds(s) { return s == null ? t('none') : duration(s * 1000).replace(t('justNow'), Math.round(s) + ' s'); }
  function clock(ms) {
    var d = new Date(ms), now = new Date();
    var hm = String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
    return d.toDateString() === now.toDateString() ? hm : (d.getMonth() + 1) + '/' + d.getDate() + ' ' + hm;
  }
  function agentName(id) { return id ? (S.agents[id] || id) : t('agent'); }
  function customerName(user) { return (user && (user.name || user.id)) || t('customer'); }
  function kindLabel(kind) { return t('kinds.' + kind); }
  function convPath(c) {
    return '/agent/api/conversations/' + encodeURIComponent(c.channel) + '/' + encodeURIComponent(c.conversation);
  }
  function toast(text) {
    var box = $('toast');
    box.textContent = text;
    box.hidden = false;
    debounce('toast', 2500, function () { box.hidden = true; });
  }

  // ---- the API ------------------------------------------------------------------------------

  function ApiError(status, message, data) {
    this.status = status; this.message = message; this.data = data || {};
  }

  async function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      init.headers['Content-Type'] = 'application/json';
      init.headers['X-CSRF-Token'] = S.csrf || '';
      init.body = JSON.stringify(body || {});
    }
    var res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, t('offline'));
    }
    var data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (e) { data = null; }
    }
    if (!res.ok) {
      if (res.status === 401 && S.started && path !== '/agent/api/login') sessionEnded();
      throw new ApiError(res.status, (data && data.error) || ('HTTP ' + res.status), data);
    }
    if (data && data.now_ms) S.skew = data.now_ms - Date.now();
    return data;
  }

  // ---- language -----------------------------------------------------------------------------

  function initialLang() {
    var saved = null;
    try { saved = localStorage.getItem(LANG_KEY); } catch (e) { /* private mode */ }
    if (saved === 'zh' || saved === 'en') return saved;
    var l = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
    return /^zh/i.test(l) ? 'zh' : 'en';
  }

  function applyLang() {
    document.documentElement.lang = S.lang === 'zh' ? 'zh-CN' : 'en';
    document.querySelectorAll('[data-i18n]').forEach(function (e) { e.textContent = t(e.getAttribute('data-i18n')); });
    document.querySelectorAll('[data-i18n-label]').forEach(function (e) {
      var label = t(e.getAttribute('data-i18n-label'));
      e.setAttribute('aria-label', label);
      e.title = label;
    });
    $$('lang').forEach(function (b) {
      b.textContent = S.lang === 'zh' ? 'English' : '中文';
      b.setAttribute('lang', S.lang === 'zh' ? 'en' : 'zh-CN');
    });
    $('reply').placeholder = t('replyPlaceholder');
    $('channel-filter').setAttribute('aria-label', t('allChannels'));
    renderSound();
    if (S.started) {
      renderFilters();
      renderCanned();
      renderQueue();
      renderCounts();
      renderStats();
      renderConversation(false);
    }
    updateTitle();
  }

  function switchLang() {
    S.lang = S.lang === 'zh' ? 'en' : 'zh';
    try { localStorage.setItem(LANG_KEY, S.lang); } catch (e) { /* private mode */ }
    applyLang();
  }

  // ---- login --------------------------------------------------------------------------------

  function show(view) {
    var app = document.getElementById('app');
    app.setAttribute('data-view', view);
    $('login').hidden = view !== 'login';
    $('top').hidden = view !== 'console';
    $('desk').hidden = view !== 'console';
  }

  function showLogin(message) {
    stopEvents();
    S.started = false;
    S.me = null;
    S.csrf = null;
    show('login');
    updateTitle();
    var err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    var form = $('login-form');
    (form.elements.id.value ? form.elements.password : form.elements.id).focus();
  }

  function sessionEnded() {
    if (!S.started) return;
    showLogin(t('sessionEnded'));
  }

  async function onLogin(e) {
    e.preventDefault();
    unlockAudio();
    var form = $('login-form');
    var id = form.elements.id.value.trim();
    var password = form.elements.password.value;
    var err = $('login-error');
    if (!id || !password) {
      err.textContent = t('fillBoth');
      err.hidden = false;
      return;
    }
    var button = $('login-submit');
    button.disabled = true;
    try {
      var r = await api('POST', '/agent/api/login', { id: id, password: password });
      S.csrf = r.csrf;
      form.elements.password.value = '';
      err.hidden = true;
      await start();
    } catch (x) {
      form.elements.password.value = '';
      form.elements.password.focus();
      err.textContent = x.status === 401 ? t('wrongPassword')
        : x.status === 429 ? t('paused', { s: (x.message.match(/\d+/) || ['60'])[0] })
          : x.status === 404 ? t('noAgents') : x.message;
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  async function onLogout() {
    try { await api('POST', '/agent/api/logout', {}); } catch (e) { /* gone anyway */ }
    showLogin('');
  }

  // ---- start --------------------------------------------------------------------------------

  async function start() {
    var s = await api('GET', '/agent/api/session');
    if (!s.agent) {
      showLogin(t('noAgents'));
      return;
    }
    S.me = s.agent;
    S.csrf = s.csrf;
    S.channels = s.channels || [];
    S.canned = s.canned_replies || [];
    S.agents = {};
    (s.agents || []).forEach(function (a) { S.agents[a.id] = a.name; });
    S.started = true;
    $('me').textContent = S.me.name;
    show('console');
    renderFilters();
    renderCanned();
    applyLang();
    connectEvents();
    await Promise.all([loadQueue(), loadStats()]);
    await route();
  }

  async function boot() {
    S.lang = initialLang();
    try { S.sound = localStorage.getItem(SOUND_KEY) !== 'off'; } catch (e) { S.sound = true; }
    wire();
    applyLang();
    try {
      await start();
    } catch (e) {
      showLogin(e.status === 401 ? '' : e.message);
    }
  }

  // ---- queue --------------------------------------------------------------------------------

  function renderFilters() {
    var sel = $('channel-filter');
    var current = S.filter.channel;
    sel.textContent = '';
    var all = el('option', null, t('allChannels'));
    all.value = '';
    sel.appendChild(all);
    S.channels.forEach(function (c) {
      var o = el('option', null, kindLabel(c.kind) + ' · ' + c.name);
      o.value = c.name;
      sel.appendChild(o);
    });
    sel.value = current;
    $('owner-filter').querySelectorAll('button').forEach(function (b) {
      b.setAttribute('aria-selected', String(b.getAttribute('data-owner') === S.filter.owner));
    });
  }

  async function loadQueue() {
    var q = '?owner=' + encodeURIComponent(S.filter.owner)
      + (S.filter.channel ? '&channel=' + encodeURIComponent(S.filter.channel) : '');
    var r = await api('GET', '/agent/api/conversations' + q);
    var before = S.counts.unclaimed;
    S.queue = r.conversations || [];
    S.counts = r.counts || S.counts;
    renderQueue();
    renderCounts();
    updateTitle();
    return before;
  }

  function reasonText(code) { return code ? t('reasons.' + code) : ''; }

  function queueItem(c) {
    var a = el('a', 'item');
    a.href = '#/c/' + encodeURIComponent(c.channel) + '/' + encodeURIComponent(c.conversation);
    a.setAttribute('role', 'listitem');
    a.setAttribute('data-role', 'queue-item');
    a.setAttribute('data-channel', c.channel);
    a.setAttribute('data-conversation', c.conversation);
    if (S.conv && S.conv.channel === c.channel && S.conv.conversation === c.conversation) a.setAttribute('aria-current', 'true');

    var top = el('div', 'item-top');
    top.appendChild(el('span', 'chan ' + c.kind, kindLabel(c.kind)));
    top.appendChild(el('span', 'item-who', customerName(c.user)));
    var wait = el('span', 'item-wait', duration(serverNow() - c.since_ms));
    wait.setAttribute('data-since', String(c.since_ms));
    wait.setAttribute('data-role', 'wait');
    if (!c.agent && serverNow() - c.since_ms > 10 * 60000) wait.classList.add('long');
    top.appendChild(wait);
    a.appendChild(top);
    a.appendChild(el('div', 'item-reason', reasonText(c.reason)));

    // The summary card: the customer's latest message and whatever was said after it, what
    // the bot drew on, then the tags.
    var card = c.card || {};
    var said = card.last_messages || [];
    var lastCustomer = said.filter(function (m) { return m.role === 'user'; }).pop();
    var lastSaid = said[said.length - 1];
    [lastCustomer, lastSaid !== lastCustomer ? lastSaid : null].filter(Boolean).forEach(function (m) {
      var line = el('div', 'item-line from-' + m.role);
      line.appendChild(el('span', 'item-role', (m.role === 'user' ? t('customer') : m.role === 'bot' ? t('bot') : t('agent')) + ': '));
      line.appendChild(document.createTextNode(m.text));
      a.appendChild(line);
    });
    if (card.sources && card.sources.length) {
      a.appendChild(el('div', 'item-sources', t('sources') + ': ' + card.sources.map(function (x) { return x.title; }).join(' · ')));
    }

    var foot = el('div', 'item-foot');
    if (c.agent) {
      foot.appendChild(el('span', 'tag owner', c.agent === (S.me && S.me.id) ? t('yours') : t('claimedBy', { name: c.agent_name || c.agent })));
    } else {
      foot.appendChild(el('span', 'tag free', t('free')));
    }
    if (card.intent && card.intent !== 'other') foot.appendChild(el('span', 'tag', t('intents.' + card.intent)));
    if (card.order) foot.appendChild(el('span', 'tag', t('order') + ' ' + card.order));
    if (card.urgency) foot.appendChild(el('span', 'tag ' + card.urgency, t('urgency') + ' ' + t('levels.' + card.urgency)));
    if (card.sentiment) foot.appendChild(el('span', 'tag ' + card.sentiment, t('sentiment') + ' ' + t('levels.' + card.sentiment)));
    a.appendChild(foot);
    return a;
  }

  function renderQueue() {
    var list = $('queue-list');
    list.textContent = '';
    S.queue.forEach(function (c) { list.appendChild(queueItem(c)); });
    $('queue-empty').hidden = S.queue.length > 0;
  }

  function tickWaits() {
    $$('wait').forEach(function (w) { w.textContent = duration(serverNow() - Number(w.getAttribute('data-since'))); });
    if (S.conv) renderStatus();
  }

  function renderCounts() {
    var box = $('counts');
    box.textContent = '';
    function chip(n, label, cls) {
      var c = el('span', 'count' + (cls ? ' ' + cls : ''));
      c.appendChild(el('b', null, String(n)));
      c.appendChild(document.createTextNode(label));
      box.appendChild(c);
    }
    chip(S.counts.unclaimed, t('waitingCount'), 'primary-count' + (S.counts.unclaimed ? ' alert' : ''));
    chip(S.counts.open, t('open'));
    chip(S.counts.mine, t('mineCount'));
    if (S.stats && S.stats.first_reply && S.stats.first_reply.median_s != null) {
      chip(seconds(S.stats.first_reply.median_s), t('firstReplyMedian'));
    }
  }

  function updateTitle() {
    var n = S.started ? S.counts.unclaimed : 0;
    document.title = (n ? '(' + n + ') ' : '') + t('title') + ' · kefu';
  }

  async function loadStats() {
    S.stats = await api('GET', '/agent/api/stats');
    renderStats();
    renderCounts();
  }

  function renderStats() {
    var body = $('stats-body');
    body.textContent = '';
    var st = S.stats;
    if (!st) return;
    var dl = el('dl');
    function row(k, v) { dl.appendChild(el('dt', null, k)); dl.appendChild(el('dd', null, v)); }
    var f = st.first_reply || {};
    row(t('firstReply') + ' · ' + t('median'), seconds(f.median_s));
    row(t('firstReply') + ' · ' + t('p90'), seconds(f.p90_s));
    row(t('answered'), String(f.count || 0));
    var reasons = st.handoffs_by_reason || {};
    var keys = Object.keys(reasons).sort(function (a, b) { return reasons[b] - reasons[a]; });
    body.appendChild(dl);
    var h = el('div', 'stats-sub', t('byReason'));
    var dl2 = el('dl');
    if (!keys.length) { dl2.appendChild(el('dt', null, t('none'))); dl2.appendChild(el('dd', null, '')); }
    keys.forEach(function (k) { dl2.appendChild(el('dt', null, reasonText(k))); dl2.appendChild(el('dd', null, String(reasons[k]))); });
    var ended = st.ended_by_how || {};
    Object.keys(ended).forEach(function (k) { dl2.appendChild(el('dt', null, t('ended') + ' · ' + t('endedHow.' + k))); dl2.appendChild(el('dd', null, String(ended[k]))); });
    body.appendChild(h);
    body.appendChild(dl2);
  }

  // ---- one conversation ----------------------------------------------------------------------

  async function route() {
    var m = location.hash.match(/^#\/c\/([^/]+)\/(.+)$/);
    if (!m) {
      S.conv = null;
      document.getElementById('app').setAttribute('data-route', 'queue');
      renderConversation(false);
      renderQueue();
      return;
    }
    var channel = decodeURIComponent(m[1]), conversation = decodeURIComponent(m[2]);
    document.getElementById('app').setAttribute('data-route', 'conv');
    if (!S.conv || S.conv.channel !== channel || S.conv.conversation !== conversation) {
      S.conv = { channel: channel, conversation: conversation, data: null, messages: [], hasMore: false };
      $('reply').value = '';
      $('reply-error').hidden = true;
      renderQueue();
      renderConversation(false);
    }
    await loadConversation(true);
  }

  async function loadConversation(scrollToEnd) {
    var c = S.conv;
    if (!c) return;
    var r;
    try {
      r = await api('GET', convPath(c) + '?limit=' + PAGE);
    } catch (e) {
      if (S.conv === c) { c.data = null; c.error = e.message; renderConversation(false); }
      return;
    }
    if (S.conv !== c) return;
    c.error = null;
    c.data = r.conversation;
    var page = r.messages || [];
    var newest = c.messages.length ? c.messages[c.messages.length - 1].seq : 0;
    if (!c.messages.length || (page.length && r.has_more && page[0].seq > newest + 1)) {
      c.messages = page; // first load, or a gap: start over from the newest page
      c.hasMore = r.has_more;
    } else {
      var first = page.length ? page[0].seq : Infinity;
      c.messages = c.messages.filter(function (m) { return m.seq < first; }).concat(page);
      if (!c.messages.length || c.messages[0].seq === (page[0] && page[0].seq)) c.hasMore = r.has_more;
    }
    renderConversation(scrollToEnd);
  }

  async function loadEarlier() {
    var c = S.conv;
    if (!c || !c.messages.length) return;
    var log = $('log');
    var fromBottom = log.scrollHeight - log.scrollTop;
    var r = await api('GET', convPath(c) + '?limit=' + PAGE + '&before=' + c.messages[0].seq);
    if (S.conv !== c) return;
    c.messages = (r.messages || []).concat(c.messages);
    c.hasMore = r.has_more;
    renderMessages();
    log.scrollTop = log.scrollHeight - fromBottom; // keep what was in view in place
  }

  function handoff() { return S.conv && S.conv.data && S.conv.data.handoff; }
  function active() { var h = handoff(); return !!(h && h.active); }
  function mine() { var h = handoff(); return active() && h.agent === (S.me && S.me.id); }

  function renderStatus() {
    var h = handoff();
    var status = $('conv-status');
    if (!h) { status.textContent = ''; return; }
    var parts = [reasonText(h.reason)];
    if (h.active && !h.agent) parts.push(t('waiting', { t: duration(serverNow() - h.since_ms) }));
    if (h.active && h.agent) parts.push(h.agent === S.me.id ? t('youHaveIt') : t('claimedBy', { name: agentName(h.agent) }));
    if (!h.active && h.ended) parts.push(t('endedHow.' + h.ended.how));
    status.textContent = parts.filter(Boolean).join(' · ');
  }

  function renderCard() {
    var box = $('card');
    box.textContent = '';
    var h = handoff();
    var card = (h && h.card) || {};
    function kv(label, value, cls) {
      if (!value) return;
      var d = el('span', 'kv' + (cls ? ' ' + cls : ''));
      d.appendChild(el('span', null, label));
      d.appendChild(document.createTextNode(value));
      box.appendChild(d);
    }
    kv(t('intent'), card.intent && card.intent !== 'other' ? t('intents.' + card.intent) : '');
    kv(t('order'), card.order || '');
    kv(t('urgency'), card.urgency ? t('levels.' + card.urgency) : '');
    kv(t('sentiment'), card.sentiment ? t('levels.' + card.sentiment) : '');
    var used = [];
    S.conv.messages.forEach(function (m) {
      (m.sources || []).forEach(function (s) { if (used.indexOf(s.title) < 0) used.push(s.title); });
    });
    if (used.length) box.appendChild(el('div', 'sources', t('sources') + ': ' + used.slice(-3).join(' · ')));
    box.hidden = !box.childNodes.length;
  }

  function deliveryText(d) {
    if (!d) return null;
    if (d.state === 'sent') return t('sent');
    if (d.state === 'failed') return t('failed', { why: d.error || '?' });
    if (d.error) return t('retrying', { n: d.attempts || 1, why: d.error });
    return t('queued');
  }

  function messageNode(m) {
    var data = S.conv.data || {};
    if (m.role === 'system') {
      var node = el('div', 'msg system' + (m.action ? ' ' + m.action : ''));
      node.setAttribute('data-role', 'message');
      node.setAttribute('data-from', 'system');
      node.setAttribute('data-seq', String(m.seq));
      var who = m.agent ? agentName(m.agent) : null;
      var text = m.action === 'claimed' ? t('noteClaimed', { name: who })
        : m.action === 'released' ? (who ? t('noteReleased', { name: who }) : t('noteReleasedBot'))
          : m.action === 'closed' ? (who ? t('noteClosed', { name: who, note: m.text }) : t('noteClosedBot', { note: m.text }))
            : m.text;
      node.appendChild(el('div', 'note', text + ' · ' + clock(m.at_ms)));
      return node;
    }
    var ours = m.role !== 'user';
    var wrap = el('div', 'msg from-' + m.role + (ours ? ' ours' : ''));
    wrap.setAttribute('data-role', 'message');
    wrap.setAttribute('data-from', m.role);
    wrap.setAttribute('data-seq', String(m.seq));
    var label = m.role === 'user' ? customerName(data.user) : m.role === 'bot' ? t('bot') : agentName(m.agent);
    wrap.appendChild(el('div', 'who', label));
    wrap.appendChild(el('div', 'bubble', m.text));
    var meta = el('div', 'meta');
    meta.appendChild(el('span', null, clock(m.at_ms)));
    var state = deliveryText(m.delivery);
    if (state) {
      var st = el('span', 'state ' + m.delivery.state, state);
      st.setAttribute('data-role', 'delivery');
      st.setAttribute('data-state', m.delivery.state);
      meta.appendChild(st);
    }
    wrap.appendChild(meta);
    return wrap;
  }

  function renderMessages() {
    var box = $('messages');
    box.textContent = '';
    S.conv.messages.forEach(function (m) {
      if (m.role !== 'system' && !m.text) return; // a silent turn
      box.appendChild(messageNode(m));
    });
    $('earlier').hidden = !S.conv.hasMore;
  }

  function renderConversation(scrollToEnd) {
    var c = S.conv;
    $('conv-empty').hidden = !!c;
    $('conv-main').hidden = !c;
    if (!c) return;
    var log = $('log');
    var nearEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    var data = c.data;
    var chan = $('conv-channel');
    chan.className = 'chan ' + (data ? data.kind : '');
    chan.textContent = data ? kindLabel(data.kind) + ' · ' + data.channel : c.channel;
    $('conv-customer').textContent = data ? customerName(data.user) : c.conversation;
    renderStatus();
    if (c.error) $('conv-status').textContent = c.error;
    var h = handoff();
    $('claim').hidden = !(active() && !h.agent);
    $('release').hidden = !mine();
    $('close').hidden = !mine();
    renderCard();
    renderMessages();
    var notice = $('conv-notice');
    var composer = $('composer');
    composer.hidden = !mine();
    notice.hidden = mine() || !data;
    if (data && !mine()) {
      if (active() && !h.agent) notice.textContent = t('claimFirst');
      else if (active()) notice.textContent = t('heldBy', { name: agentName(h.agent) });
      else if (h && h.ended && h.ended.how === 'closed') notice.textContent = t('withBot') + ' ' + t('closedBy', { name: agentName(h.ended.by), note: h.ended.note || '' });
      else if (h && h.ended && h.ended.by) notice.textContent = t('withBot') + ' ' + t('releasedBy', { name: agentName(h.ended.by) });
      else notice.textContent = t('withBot');
    }
    if (scrollToEnd || nearEnd) log.scrollTop = log.scrollHeight;
  }

  // ---- actions ------------------------------------------------------------------------------

  async function act(what, body) {
    var c = S.conv;
    try {
      await api('POST', convPath(c) + '/' + what, body);
      return true;
    } catch (e) {
      if (e.status === 409 && e.data && e.data.agent) toast(t('lostClaim', { name: agentName(e.data.agent) }));
      else toast(t('failedAction', { why: e.message }));
      return false;
    } finally {
      if (S.conv === c) await loadConversation(false);
      loadQueue();
    }
  }

  async function onClaim() {
    if (await act('claim', {})) {
      toast(t('claimedNow'));
      $('reply').focus();
    }
  }

  async function onRelease() {
    if (await act('release', {})) toast(t('released'));
  }

  function onClose() {
    var d = $('close-dialog');
    $('close-note').value = '';
    $('close-error').hidden = true;
    if (d.showModal) d.showModal(); else d.setAttribute('open', '');
    $('close-note').focus();
  }

  async function onCloseConfirm(e) {
    e.preventDefault();
    var note = $('close-note').value.trim();
    if (!note) {
      $('close-error').textContent = t('noteRequired');
      $('close-error').hidden = false;
      return;
    }
    $('close-dialog').close();
    if (await act('close', { note: note })) toast(t('closed'));
  }

  async function sendReply() {
    var input = $('reply');
    var text = input.value.trim();
    var c = S.conv;
    if (!text || S.sending || !c) return;
    S.sending = true;
    $('send').disabled = true;
    $('reply-error').hidden = true;
    try {
      var r = await api('POST', convPath(c) + '/reply', { text: text });
      input.value = '';
      autosize();
      if (S.conv === c && r && r.message) {
        c.messages = c.messages.filter(function (m) { return m.seq !== r.message.seq; }).concat([r.message]);
        renderConversation(true);
      }
    } catch (e) {
      $('reply-error').textContent = e.status === 409 && e.data && e.data.agent
        ? t('heldBy', { name: agentName(e.data.agent) }) : t('failedAction', { why: e.message });
      $('reply-error').hidden = false;
    } finally {
      S.sending = false;
      $('send').disabled = false;
      input.focus();
    }
  }

  function autosize() {
    var input = $('reply');
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 180) + 'px';
  }

  function renderCanned() {
    var sel = $('canned');
    sel.textContent = '';
    sel.hidden = !S.canned.length;
    var first = el('option', null, t('canned'));
    first.value = '';
    sel.appendChild(first);
    S.canned.forEach(function (r, i) {
      var o = el('option', null, r.title);
      o.value = String(i);
      sel.appendChild(o);
    });
  }

  /** Fill a canned reply's placeholders; one still unknown ({order} without an order) stays
   * in the text, selected, for the agent to type over. */
  function useCanned() {
    var sel = $('canned');
    var r = S.canned[Number(sel.value)];
    sel.value = '';
    if (!r) return;
    var data = (S.conv && S.conv.data) || {};
    var card = (data.handoff && data.handoff.card) || {};
    var values = { order: card.order, customer: data.user && (data.user.name || data.user.id), agent: S.me && S.me.name };
    var text = r.text.replace(/\{(order|customer|agent)\}/g, function (m, k) { return values[k] || m; });
    var input = $('reply');
    var at = input.selectionStart || input.value.length;
    input.value = input.value.slice(0, at) + text + input.value.slice(input.selectionEnd || at);
    input.focus();
    var hole = input.value.indexOf('{order}');
    if (hole >= 0) input.setSelectionRange(hole, hole + '{order}'.length);
    else input.setSelectionRange(at + text.length, at + text.length);
    autosize();
  }

  // ---- live updates -------------------------------------------------------------------------

  function stopEvents() {
    if (S.events) S.events.close();
    S.events = null;
  }

  function connectEvents() {
    stopEvents();
    var es = new EventSource('/agent/api/events');
    S.events = es;
    ['handoff', 'message', 'claimed', 'reply', 'released', 'closed', 'delivery', 'resync'].forEach(function (kind) {
      es.addEventListener(kind, function (e) { onEvent(kind, e.data); });
    });
    es.addEventListener('ready', function () { document.getElementById('app').setAttribute('data-live', 'true'); });
    es.onerror = function () {
      document.getElementById('app').setAttribute('data-live', 'false');
      if (es.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      // Closed for good (the session ended, or the server restarted): check, then reconnect.
      debounce('reconnect', 3000, async function () {
        if (!S.started || S.events !== es) return;
        try {
          await api('GET', '/agent/api/session');
          connectEvents();
          loadQueue();
          if (S.conv) loadConversation(false);
        } catch (x) { /* a 401 already showed the login */ }
      });
    };
  }

  function onEvent(kind, raw) {
    var e = {};
    try { e = JSON.parse(raw); } catch (x) { /* resync */ }
    if (kind !== 'delivery') {
      debounce('queue', 120, loadQueue);
      debounce('stats', 600, loadStats);
    }
    if (kind === 'handoff') announce(e);
    var c = S.conv;
    if (c && (kind === 'resync' || (e.channel === c.channel && e.conversation === c.conversation))) {
      debounce('conv', 120, function () { loadConversation(false); });
    }
  }

  function announce(e) {
    beep();
    var app = document.getElementById('app');
    app.setAttribute('data-alert', String(Date.now()));
    if (document.hidden && window.Notification && Notification.permission === 'granted') {
      try { new Notification(t('title'), { body: t('newHandoff', { who: e.conversation || '' }) }); } catch (x) { /* not allowed here */ }
    }
  }

  // Browsers only play sound after the user touched the page: the audio context is made on
  // the first click or key (the login button counts).
  function unlockAudio() {
    if (S.audio || !(window.AudioContext || window.webkitAudioContext)) return;
    try { S.audio = new (window.AudioContext || window.webkitAudioContext)(); } catch (e) { S.audio = null; }
  }

  function beep() {
    if (!S.sound || !S.audio) return;
    try {
      var ctx = S.audio, now = ctx.currentTime;
      if (ctx.state === 'suspended') ctx.resume();
      [880, 1175].forEach(function (f, i) {
        var o = ctx.createOscillator(), g = ctx.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, now + i * 0.16);
        g.gain.exponentialRampToValueAtTime(0.18, now + i * 0.16 + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.16 + 0.15);
        o.connect(g).connect(ctx.destination);
        o.start(now + i * 0.16);
        o.stop(now + i * 0.16 + 0.16);
      });
    } catch (e) { /* no sound, no harm */ }
  }

  // Material Design icons (Apache-2.0): a bell, and a bell struck through.
  var BELL = 'M12 22c1.1 0 2-.9 2-2h-4c0 1.1.89 2 2 2zm6-6v-5c0-3.07-1.64-5.64-4.5-6.32V4c0-.83-.67-1.5-1.5-1.5s-1.5.67-1.5 1.5v.68C7.63 5.36 6 7.92 6 11v5l-2 2v1h16v-1l-2-2z';
  var BELL_OFF = 'M20 18.69L7.84 6.14 5.27 3.49 4 4.76l2.8 2.8v.01c-.52.99-.8 2.16-.8 3.42v5l-2 2v1h13.73l2 2L21 19.72l-1-1.03zM12 22c1.11 0 2-.89 2-2h-4c0 1.11.89 2 2 2zm6-7.32V11c0-3.08-1.64-5.64-4.5-6.32V4c0-.83-.67-1.5-1.5-1.5s-1.5.67-1.5 1.5v.68c-.15.03-.29.08-.42.12-.1.03-.2.07-.3.11h-.01c-.01 0-.01 0-.02.01-.23.09-.46.2-.68.31 0 0-.01 0-.01.01L18 14.68z';

  function icon(d) {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', '20');
    svg.setAttribute('height', '20');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    var path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    path.setAttribute('fill', 'currentColor');
    svg.appendChild(path);
    return svg;
  }

  function renderSound() {
    var b = $('sound');
    b.textContent = '';
    b.appendChild(icon(S.sound ? BELL : BELL_OFF));
    b.setAttribute('aria-pressed', String(S.sound));
    b.setAttribute('aria-label', t('sound'));
    b.title = S.sound ? t('soundOn') : t('soundOff');
  }

  // ---- wiring -------------------------------------------------------------------------------

  function wire() {
    $('login-form').addEventListener('submit', onLogin);
    $$('lang').forEach(function (b) { b.addEventListener('click', switchLang); });
    $('logout').addEventListener('click', onLogout);
    $('sound').addEventListener('click', function () {
      S.sound = !S.sound;
      try { localStorage.setItem(SOUND_KEY, S.sound ? 'on' : 'off'); } catch (e) { /* private mode */ }
      unlockAudio();
      renderSound();
    });
    document.addEventListener('pointerdown', unlockAudio, { once: true });
    document.addEventListener('keydown', unlockAudio, { once: true });
    $('channel-filter').addEventListener('change', function (e) { S.filter.channel = e.target.value; loadQueue(); });
    $('owner-filter').addEventListener('click', function (e) {
      var b = e.target.closest('button[data-owner]');
      if (!b) return;
      S.filter.owner = b.getAttribute('data-owner');
      renderFilters();
      loadQueue();
    });
    $('back').addEventListener('click', function () { location.hash = '#/'; });
    $('claim').addEventListener('click', onClaim);
    $('release').addEventListener('click', onRelease);
    $('close').addEventListener('click', onClose);
    $('close-form').addEventListener('submit', onCloseConfirm);
    $('close-cancel').addEventListener('click', function () { $('close-dialog').close(); });
    $('earlier').addEventListener('click', loadEarlier);
    $('canned').addEventListener('change', useCanned);
    var input = $('reply');
    var composing = false;
    input.addEventListener('compositionstart', function () { composing = true; });
    input.addEventListener('compositionend', function () { composing = false; });
    input.addEventListener('input', autosize);
    input.addEventListener('keydown', function (e) {
      if (e.key !== 'Enter' || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey) return;
      // IME: the Enter that picks a candidate (pinyin, kana…) must not send.
      if (e.isComposing || composing || e.keyCode === 229) return;
      e.preventDefault();
      sendReply();
    });
    $('composer').addEventListener('submit', function (e) { e.preventDefault(); sendReply(); });
    window.addEventListener('hashchange', function () { if (S.started) route(); });
    setInterval(tickWaits, 30000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
