"""Ad-Hoc Commands (XEP-0050 v1.3) run by the server, as the service ``adhoc``.

Other modules add commands with :meth:`AdHoc.add`: a node, a name, who
may run it and what it does, stage by stage (:class:`Ask` for another
form, :class:`Done` at the end); the XEP-0133 administration commands
(``admin_commands``) are such commands.

- Discovery ('Discovering Support', 'Retrieving the Command List'): the
  hosts advertise ``http://jabber.org/protocol/commands`` in disco#info;
  disco#items of that node on a host lists, as items of the host, the
  commands the requester may run there (the list differs per requester);
  disco#info of a command node has the identity ``automation/command-node``
  named as the command and the features ``http://jabber.org/protocol/
  commands`` and ``jabber:x:data``; of the list node, ``automation/
  command-list``.  The node answers to disco#info go through the disco
  service's :meth:`add_node`, which does not say who asks: a command's
  info is given to anyone, not 403 as the XEP suggests for those who may
  not run it.  The disco service has no hook for node items: they are
  answered here, by a handler of disco#items to the host that runs before
  the disco module's and claims the commands node only.
- Execution ('Executing Commands'): ``<command node action sessionid/>``
  in an iq ``set`` to the host.  The first request (``execute``, or none)
  runs the command's first stage; a command that needs input answers
  ``status='executing'`` with a ``sessionid``, an ``<actions/>`` element
  ('Command Actions': ``next`` or ``complete`` is the default, ``prev``
  from the second stage on) and its form; the last stage answers
  ``completed``, with its notes and an optional result form.  ``cancel``
  ends a session (``canceled``); ``prev`` shows the previous stage's form
  again.  A submitted form (``jabber:x:data``, of type ``submit``, or
  ``cancel`` read as ``submit``, 'Use of Data Forms') must fill the fields
  the stage asked as required.  A command that completes but fails says so
  in a ``<note type='error'/>`` ('Commands Successful/Failed').
- Sessions ('Session Lifetime'): a session belongs to one requester (full
  JID) and one host; it ends when it completes or is canceled, after
  :data:`SESSION_TIMEOUT` seconds without a request, or when the account
  starts more than :data:`MAX_SESSIONS` (its oldest ends).  Whether the
  requester may run the command is asked again at every stage.
- Language ('Internationalization and Localization'): the commands speak
  English and every answer says ``xml:lang='en'``; an ``xml:lang`` that is
  no language tag at all is ``bad-locale``.
- Errors ('Possible Errors'): an unknown action is ``bad-request`` with
  ``<malformed-action/>``; an action the stage does not offer
  ``<bad-action/>``; a form that cannot be read or lacks a required field
  ``<bad-payload/>``; a session of another requester, command or host, or
  an empty ``sessionid``, ``<bad-sessionid/>``; a session that ended or
  expired ``not-allowed`` with ``<session-expired/>``; an unknown node
  ``item-not-found``; a requester who may not run the command
  ``forbidden``.

The service also offers :class:`Ask`, :class:`Done`, :class:`Note` and
:meth:`AdHoc.bad_payload` as attributes, so that modules build their
answers without importing this one.
"""

import re
import secrets
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import HOST, iq_event
from xmppd.core.stanzas import StanzaError, child, iq_result
from xmppd.core.xmlstream import NS_XML
from xmppd.wokkel_compat import data_form

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
ACTIONS = ("execute", "cancel", "prev", "next", "complete")
SESSION_TIMEOUT = 600.0  # seconds a session waits for the requester's next request
MAX_SESSIONS = 10  # sessions one account may have under way
LANGUAGE = "en"
LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")  # BCP 47's shape
# The defined condition of each application-specific error ('Possible Errors').
ERRORS = {"malformed-action": "bad-request", "bad-action": "bad-request",
          "bad-locale": "bad-request", "bad-payload": "bad-request",
          "bad-sessionid": "bad-request", "session-expired": "not-allowed"}


@dataclass(frozen=True)
class Note:
    """A ``<note/>``: ``type`` is ``info``, ``warn`` or ``error``."""

    text: str
    type: str = "info"


@dataclass
class Ask:
    """Another stage: the requester gets ``form`` (a wokkel ``Form`` of
    type ``form``) and the session goes on; ``final``: submitting it
    completes the command (the default action is ``complete``, else
    ``next``).  ``note``: a string, a :class:`Note` or a list of them."""

    form: object
    note: object = None
    final: bool = True


@dataclass
class Done:
    """The command completed, with ``note`` (as :class:`Ask`'s) and an
    optional ``form`` of type ``result``."""

    note: object = None
    form: object = None


@dataclass
class Request:
    """What a command's ``run`` gets: the ``requester`` (full JID), the
    ``domain`` it runs on, the ``form`` submitted (or None), the ``action``
    (``execute`` first, then ``next`` or ``complete``), the ``stage`` (0,
    then how many forms were answered) and ``state``, a dict kept across
    the stages of one session."""

    requester: object
    domain: str
    node: str
    form: object
    action: str
    stage: int
    state: dict


@dataclass
class Command:
    node: str
    name: str
    run: object
    allowed: object
    host: str | None


@dataclass(eq=False)
class Session:
    id: str
    command: Command
    requester: object
    domain: str
    asked: list = field(default_factory=list)  # the Ask of each stage so far
    state: dict = field(default_factory=dict)
    timer: object = None


def command_error(name, text=None):
    """The stanza error of XEP-0050's application-specific condition ``name``."""
    return StanzaError(ERRORS[name], text, application=(NS_COMMANDS, name))


def _notes(note):
    if note is None:
        return []
    if isinstance(note, (str, Note)):
        note = [note]
    return [Note(n) if isinstance(n, str) else n for n in note]


class AdHoc:
    """The service ``adhoc``."""

    Ask, Done, Note = Ask, Done, Note

    def __init__(self, api):
        self._api = api
        self._commands = {}  # node -> Command, in the order added
        self._sessions = {}  # session id -> Session
        self._by_account = {}  # bare JID -> [session id], oldest first

    def add(self, node, name, run, allowed, host=None):
        """Offer command ``node`` named ``name`` on every host where this
        module is enabled (on hosted domain ``host`` only, if given), to the
        requesters ``allowed(requester, domain)`` says may run it.
        ``run(request)`` (a :class:`Request`) returns an :class:`Ask`, a
        :class:`Done` or a Deferred of one; it raises :class:`StanzaError`
        (such as :meth:`bad_payload`) for a stage it refuses: the session
        stays at that stage.  ``prev`` sends the previous stage's form
        again without calling ``run``."""
        if node in self._commands:
            raise ValueError(f"command {node!r} is already offered")
        self._commands[node] = Command(node, name, run, allowed, host)

    @staticmethod
    def bad_payload(text):
        """The error for a submitted form the command cannot take."""
        return command_error("bad-payload", text)

    def commands(self, requester, domain):
        """The commands ``requester`` may run on ``domain``, in the order added."""
        if requester is None:
            return []
        return [command for command in self._commands.values()
                if self._offered(command, domain) and command.allowed(requester, domain)]

    def _offered(self, command, domain):
        return command.host in (None, domain) and self._api.enabled(domain)

    # Discovery

    def node_info(self, domain, node):
        """disco#info of the commands node and of each command's node (for
        the disco service's ``add_node``)."""
        if node == NS_COMMANDS and self._api.enabled(domain):
            return _info(node, ("automation", "command-list", "Commands"), ())
        command = self._commands.get(node)
        if command is None or not self._offered(command, domain):
            return None
        return _info(node, ("automation", "command-node", command.name),
                     (NS_COMMANDS, data_form.NS_X_DATA))

    def items(self, stanza):
        """Claim disco#items of the commands node: the requester's commands."""
        domain = stanza.recipient.domain
        if stanza.payload.getAttribute("node") != NS_COMMANDS or not self._api.enabled(domain):
            return False
        query = domish.Element((NS_DISCO_ITEMS, "query"))
        query["node"] = NS_COMMANDS
        for command in self.commands(stanza.sender, domain):
            item = query.addElement("item")
            item["jid"], item["node"], item["name"] = domain, command.node, command.name
        self._api.reply(stanza, iq_result(stanza.element, query))
        return True

    # Execution

    def execute(self, stanza):
        """Answer a ``<command/>`` request (an iq handler)."""
        request = stanza.payload
        action = request.getAttribute("action") or "execute"
        if action not in ACTIONS:
            raise command_error("malformed-action", f"no action {action!r}")
        lang = request.getAttribute((NS_XML, "lang")) or stanza.element.getAttribute(
            (NS_XML, "lang"))
        if lang is not None and not LANGUAGE_TAG.fullmatch(lang):
            raise command_error("bad-locale", f"{lang!r} is not a language tag")
        node = request.getAttribute("node")
        if not node:
            raise StanzaError("bad-request", "the command has no node")
        sessionid = request.getAttribute("sessionid")
        if sessionid is None:
            return self._start(stanza, node, action)
        return self._continue(stanza, node, action, sessionid)

    def _start(self, stanza, node, action):
        command, domain, requester = self._commands.get(node), stanza.recipient.domain, \
            stanza.sender
        if command is None or not self._offered(command, domain):
            raise StanzaError("item-not-found", f"there is no command {node}")
        if requester is None or not command.allowed(requester, domain):
            raise StanzaError("forbidden", "you may not run this command")
        if action == "cancel":
            return _element(node, None, "canceled")
        if action != "execute":
            raise command_error("bad-action", f"{action} needs a session: execute the command")
        session = Session(secrets.token_urlsafe(12), command, requester, domain)
        return self._run(session, _submitted(stanza.payload), action)

    def _continue(self, stanza, node, action, sessionid):
        if not sessionid:
            raise command_error("bad-sessionid", "the sessionid is empty")
        session = self._sessions.get(sessionid)
        if session is None:
            raise command_error("session-expired", "this session has ended or expired")
        if (session.requester != stanza.sender or session.command.node != node
                or session.domain != stanza.recipient.domain):
            raise command_error("bad-sessionid", "this is not a session of yours of this command")
        if not session.command.allowed(session.requester, session.domain):
            self._end(session)
            raise StanzaError("forbidden", "you may no longer run this command")
        if action == "cancel":
            self._end(session)
            return _element(node, session.id, "canceled")
        current = session.asked[-1]
        offered = "complete" if current.final else "next"
        if action == "execute":
            action = offered
        if action == "prev":
            if len(session.asked) < 2:
                raise command_error("bad-action", "this is the first stage")
            session.asked.pop()
            self._keep(session)
            return self._stage(session)
        if action != offered:
            raise command_error("bad-action", f"this stage offers {offered}, not {action}")
        form = _submitted(stanza.payload)
        _check_required(current.form, form)
        return self._run(session, form, action)

    def _run(self, session, form, action):
        request = Request(session.requester, session.domain, session.command.node, form,
                          action, len(session.asked), session.state)
        d = defer.maybeDeferred(session.command.run, request)
        return d.addCallback(self._answer, session)

    def _answer(self, outcome, session):
        if isinstance(outcome, Ask):
            session.asked.append(outcome)
            self._keep(session)
            return self._stage(session)
        if not isinstance(outcome, Done):
            raise TypeError(f"command {session.command.node} gave {outcome!r}")
        self._end(session)
        self._api.log.info("command {node} run by {requester}", node=session.command.node,
                           requester=session.requester)
        return _with_payload(_element(session.command.node, session.id, "completed"),
                             _notes(outcome.note), outcome.form)

    def _stage(self, session):
        """The answer asking the form of the session's current stage."""
        ask = session.asked[-1]
        command = _element(session.command.node, session.id, "executing")
        actions = command.addElement("actions")
        actions["execute"] = "complete" if ask.final else "next"
        if len(session.asked) > 1:
            actions.addElement("prev")
        actions.addElement(actions["execute"])
        return _with_payload(command, _notes(ask.note), ask.form)

    # Sessions

    def _keep(self, session):
        """Keep ``session`` (again) for :data:`SESSION_TIMEOUT` seconds."""
        if session.timer is not None and session.timer.active():
            session.timer.reset(SESSION_TIMEOUT)
        else:
            session.timer = self._api.clock.callLater(SESSION_TIMEOUT, self._end, session)
        if session.id in self._sessions:
            return
        self._sessions[session.id] = session
        ids = self._by_account.setdefault(session.requester.bare, [])
        ids.append(session.id)
        if len(ids) > MAX_SESSIONS:
            self._end(self._sessions[ids[0]])

    def _end(self, session):
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        if self._sessions.pop(session.id, None) is None:
            return
        ids = self._by_account[session.requester.bare]
        ids.remove(session.id)
        if not ids:
            del self._by_account[session.requester.bare]


def _element(node, sessionid, status):
    command = domish.Element((NS_COMMANDS, "command"))
    command["node"] = node
    if sessionid is not None:
        command["sessionid"] = sessionid
    command["status"] = status
    command[(NS_XML, "lang")] = LANGUAGE
    return command


def _with_payload(command, notes, form):
    for note in notes:
        command.addElement("note", content=note.text)["type"] = note.type
    if form is not None:
        command.addChild(form.toElement())
    return command


def _info(node, identity, features):
    query = domish.Element((NS_DISCO_INFO, "query"))
    query["node"] = node
    element = query.addElement("identity")
    element["category"], element["type"], element["name"] = identity
    for feature in features:
        query.addElement("feature")["var"] = feature
    return query


def _submitted(request):
    """The data form of a ``<command/>`` request, or None."""
    x = child(request, data_form.NS_X_DATA, "x")
    if x is None:
        return None
    try:
        return data_form.Form.fromElement(x)
    except (data_form.Error, ValueError) as e:
        raise command_error("bad-payload", f"the form cannot be read: {e}") from None


def _check_required(asked, submitted):
    """bad-payload unless ``submitted`` fills the fields ``asked`` requires."""
    missing = [f.label or f.var for f in asked.fieldList if f.required and f.var and not (
        submitted is not None and f.var in submitted.fields
        and any(str(value).strip() for value in submitted.fields[f.var].values))]
    if missing:
        raise command_error("bad-payload", f"required: {', '.join(missing)}")


def setup(api):
    api.depends("disco")
    adhoc = AdHoc(api)
    api.provide("adhoc", adhoc)
    api.disco_feature(NS_COMMANDS)
    api.service("disco").add_node(adhoc.node_info)
    # Before the disco module's answer to disco#items (item-not-found for any node).
    api.hook(iq_event("get", HOST, NS_DISCO_ITEMS), adhoc.items, priority=10)
    api.handle_iq("set", HOST, NS_COMMANDS, adhoc.execute)
