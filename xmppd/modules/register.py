"""In-band registration (XEP-0077 v2.4), with invitation tokens
(XEP-0445 v0.2), and in-band password changes and account removal.

- Registration (§3.1, §3.1.1): a client stream after TLS and before
  SASL may ask for the registration fields (``get``: ``<username/>`` and
  ``<password/>``, and the same as a XEP-0004 form of FORM_TYPE
  ``jabber:iq:register``, §4) and register an account (``set``, the
  simple fields or the form, the form first, §6).  These iqs are
  elements of the unauthenticated stream (``api.streams.on_element``):
  the exception §3.1.1 makes to RFC 6120 §6.4.1, which has anything else
  before authentication end the stream with ``not-authorized``.  Only
  hosts with ``[register] allow = true`` take them (off by default: a
  closed domain), and offer the ``<register/>`` stream feature (§8);
  elsewhere they are ``service-unavailable`` (§3.1).  Once registered, the
  client authenticates as usual.
- Errors (§3.1): a missing or empty username or password, an invalid
  username (RFC 7622 localpart), a password shorter than
  ``min_password_length`` characters or one the OpaqueString profile
  refuses, or a second registration on one stream (§3.1.1) is
  ``not-acceptable``; a taken username ``conflict``; more than
  ``max_per_ip_per_hour`` registrations to a host from one address (a
  token bucket of ``max_per_ip_burst``) ``policy-violation`` (wait); with
  ``invite_only = true``, a registration without an invitation
  ``not-allowed``.  Errors never carry the request (and its password)
  back (§3.3).
- Invitations (XEP-0445 §3, §4): where registration is allowed the stream
  also offers ``<register xmlns='urn:xmpp:ibr-token:0'/>`` (and
  ``urn:xmpp:invite``, which clients written before XEP-0445 look for, as
  Prosody does); the client sends ``<iq type='set'><preauth
  xmlns='urn:xmpp:pars:0' token='...'/></iq>``: a valid token (of the
  ``invites`` service) is kept for the stream, an unknown, used or
  expired one is ``item-not-found``.  Its expiry is checked then only.
  The token may instead come as the registration form's ``token`` field,
  which the form asks for on ``invite_only`` hosts (§4: with the form
  alone, as the simple fields cannot carry it, §6).  Registering uses it
  (a single-use one is taken, atomically, and given back if the
  registration fails: it is used only by a registration that succeeds),
  and the ``invites`` service then subscribes an inviting user and the
  new account to each other (XEP-0379 §3, XEP-0401 §5.5).
- Password change (§3.3) and cancellation (§3.2), by an authenticated
  account of a password host, to its own host or bare JID, whatever
  ``allow`` says: a ``<username/>`` that is not the account's own is
  ``not-allowed``, a missing or empty password ``bad-request`` (the old
  one stays), a short one or one the profile refuses ``not-acceptable``;
  the account's other streams are closed with ``reset`` (the
  ``accounts`` service).  ``<remove/>``, alone in the query (else
  ``bad-request``), cancels the account's presence subscriptions and
  refuses the requests pending (its contacts get ``unsubscribe`` and
  ``unsubscribed``, §3.2), deletes the account and all it stores, closes
  its other streams with ``not-authorized``, sends the result, then
  closes the asking stream with ``not-authorized`` (§3.2).  An ``iq get``
  from an account says ``<registered/>`` with its username (§3.1).
- Discovery (§10): hosts advertise ``jabber:iq:register`` in disco#info.
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.api import ENCRYPTED
from xmppd.core.events import BARE, HOST
from xmppd.core.limits import CreationBuckets
from xmppd.core.stanzas import StanzaError, child, error_reply, iq_problem, iq_result
from xmppd.core.xmlstream import NS_CLIENT
from xmppd.jid import JID, InvalidJID, normalize_localpart
from xmppd.options import Option, Options, boolean, integer, positive_number
from xmppd.storage import RosterItem, UserExists
from xmppd.wokkel_compat import data_form

NS_REGISTER = "jabber:iq:register"
NS_CHANGE_PASSWORD = NS_REGISTER + ":changepassword"  # the form of a change (§3.3)
NS_FEATURE = "http://jabber.org/features/iq-register"
NS_PARS = "urn:xmpp:pars:0"
NS_IBR_TOKEN = "urn:xmpp:ibr-token:0"
NS_INVITE = "urn:xmpp:invite"  # the same, as clients of earlier drafts look for it
SIMPLE_FIELDS = ("username", "password")  # of the schema (§4: no others)
FORM_FIELDS = ("username", "password", "token")
NO_INVITATION = "the invitation is not valid: it was used, revoked or it expired"

OPTIONS = Options(  # [register]
    allow=Option(False, boolean),  # registration before authentication
    invite_only=Option(False, boolean),  # ... only with an invitation (XEP-0445)
    min_password_length=Option(8, integer(1)),  # characters
    max_per_ip_per_hour=Option(3.0, positive_number),  # registrations from one address
    max_per_ip_burst=Option(3, integer(1)),
)


def _strip(element):
    """Take the payload out of iq ``element`` so that an error does not
    send it (and its password) back (§3.3); the payload."""
    payload = next(element.elements(), None)
    element.children = [node for node in element.children
                        if not isinstance(node, domish.Element)]
    return payload


def submitted(query, form_types=(NS_REGISTER,)):
    """The fields a registration or a password change gives: those of its
    data form (of FORM_TYPE ``form_types``) if it has one (§4, §6), else
    the simple elements (without a token: the schema has none)."""
    x = child(query, data_form.NS_X_DATA, "x")
    if x is None:
        return {name: str(element) for name in SIMPLE_FIELDS
                if (element := child(query, NS_REGISTER, name)) is not None}
    try:
        form = data_form.Form.fromElement(x)
    except Exception as e:  # wokkel raises plain errors on malformed forms
        raise StanzaError("bad-request", f"malformed data form: {e}") from None
    if form.formType != "submit" or form.formNamespace not in form_types:
        raise StanzaError("bad-request", f"expected a submitted {form_types[0]} form")
    return {name: str(form.fields[name].value) for name in FORM_FIELDS
            if name in form.fields and form.fields[name].value is not None}


def _username(fields):
    text = fields.get("username", "").strip()
    if not text:
        raise StanzaError("not-acceptable", "a username is required")
    try:
        return normalize_localpart(text)
    except InvalidJID:
        raise StanzaError("not-acceptable", "the username is not valid") from None


def _password(fields, options, missing="not-acceptable"):
    """The password of ``fields``; ``missing`` is the condition of none."""
    password = fields.get("password", "")
    if not password:
        raise StanzaError(missing, "a password is required")
    if len(password) < options.min_password_length:
        raise StanzaError("not-acceptable", f"the password is too short (at least "
                          f"{options.min_password_length} characters)")
    return password


class Registration:
    """The service ``register``, and the iqs of XEP-0077 and XEP-0445."""

    def __init__(self, api):
        self._api = api
        self._buckets = CreationBuckets(api.clock)

    def allows(self, domain):
        """Whether hosted ``domain`` takes registrations before
        authentication (``[register] allow``)."""
        host = self._api.hosts.get(domain)
        return (host is not None and host.authentication == "password"
                and self._api.enabled(domain) and self._api.options_for(domain).allow)

    # Before authentication

    def feature(self, namespace):
        """A stream feature builder: ``<register xmlns=namespace/>`` where
        registration is allowed."""
        def build(stream):
            return domish.Element((namespace, "register")) if self.allows(stream.domain) \
                else None
        return build

    def element(self, stream, element):
        """Claim an iq of registration or with a token from a stream not
        authenticated yet; answer it on the stream."""
        payload = next(element.elements(), None)
        if (stream.user is not None or not stream.secure or payload is None
                or (payload.uri, payload.name) not in ((NS_REGISTER, "query"),
                                                       (NS_PARS, "preauth"))):
            return False
        type_ = element.getAttribute("type")
        if type_ not in ("get", "set"):
            return True  # a result or an error: nothing to answer
        problem = iq_problem(element)
        _strip(element)
        d = defer.maybeDeferred(self._unauthenticated, stream, element, problem, payload)
        d.addCallbacks(lambda result: stream.send(iq_result(element, result)),
                       self._failed, errbackArgs=(stream, element))
        return True if d.called else d.addCallback(lambda _: True)

    def _failed(self, failure, stream, element):
        if failure.check(StanzaError):
            error = failure.value
        else:
            self._api.log.failure("registration from {peer} failed", failure, peer=stream.peer)
            error = StanzaError("internal-server-error")
        stream.send(error_reply(element, error))

    def _unauthenticated(self, stream, element, problem, payload):
        if problem is not None:
            raise StanzaError("bad-request", problem)
        if not (_to_host(element.getAttribute("to"), stream.domain)
                and self.allows(stream.domain)):
            raise StanzaError("service-unavailable", "registration is not available here")
        type_ = element.getAttribute("type")
        if payload.name == "preauth":
            if type_ != "set":
                raise StanzaError("bad-request", "a token is given with an iq set")
            return self._preauth(stream, payload.getAttribute("token"))
        if type_ == "get":
            return self._fields(stream)
        return self._register(stream, payload)

    @defer.inlineCallbacks
    def _preauth(self, stream, token):
        """XEP-0445 §4: keep a valid token for the stream's registration."""
        stream.state.setdefault("register", {})["invite"] = yield self._invite(stream, token)

    @defer.inlineCallbacks
    def _invite(self, stream, token):
        invite = yield self._api.service("invites").find(stream.domain, token)
        if invite is None:
            raise StanzaError("item-not-found", NO_INVITATION)
        return invite

    def _fields(self, stream):
        """§3.1: the fields to fill in, simple and as a form (§4).  Where a
        token is needed and none was given, the form asks for it too, and
        the simple fields are left out (§6: they cannot carry it)."""
        options = self._api.options_for(stream.domain)
        needs_token = (options.invite_only
                       and "invite" not in stream.state.get("register", {}))
        text = "Choose a username and password to register with this server."
        if needs_token:
            text += " Registration needs an invitation: give its token."
        query = domish.Element((NS_REGISTER, "query"))
        query.addElement("instructions", content=text)
        if not needs_token:
            query.addElement("username")
            query.addElement("password")
        form = data_form.Form("form", title=f"Register on {stream.domain}",
                              instructions=[text], formNamespace=NS_REGISTER)
        form.addField(data_form.Field("text-single", var="username", label="Username",
                                      required=True))
        form.addField(data_form.Field("text-private", var="password", label="Password",
                                      required=True))
        if needs_token:
            form.addField(data_form.Field("text-single", var="token",
                                          label="Invitation token", required=True))
        query.addChild(form.toElement())
        return query

    @defer.inlineCallbacks
    def _register(self, stream, query):
        api, domain = self._api, stream.domain
        options = api.options_for(domain)
        state = stream.state.setdefault("register", {})
        if state.get("registered"):
            raise StanzaError("not-acceptable", "an account was registered on this stream: "
                              "authenticate with it")
        fields = submitted(query)
        invite = state.get("invite")
        if fields.get("token"):
            invite = yield self._invite(stream, fields["token"])
        if options.invite_only and invite is None:
            raise StanzaError("not-allowed", "registration here needs an invitation")
        user = JID(_username(fields), domain, None)
        password = _password(fields, options)
        accounts = api.service("accounts")
        if (yield accounts.exists(user)):
            raise StanzaError("conflict", "the username is taken")
        if not self._buckets.take((domain, stream.address), options.max_per_ip_per_hour / 3600,
                                  options.max_per_ip_burst):
            api.log.info("too many registrations on {host} from {address}", host=domain,
                         address=stream.address)
            raise StanzaError("policy-violation", "too many registrations from your address; "
                              "try again later", "wait")
        invites = api.service("invites")
        if invite is not None and not (yield invites.use(invite)):
            state.pop("invite", None)
            raise StanzaError("item-not-found", NO_INVITATION)
        try:
            yield accounts.create(user, password)
        except Exception as e:
            if invite is not None:
                yield invites.restore(invite)
            if isinstance(e, UserExists):
                raise StanzaError("conflict", "the username is taken") from None
            if isinstance(e, accounts.PasswordRefused):
                raise StanzaError("not-acceptable", str(e)) from None
            raise
        state["registered"] = True
        state.pop("invite", None)
        api.log.info("{user} registered from {peer}{how}", user=user.bare_str, peer=stream.peer,
                     how="" if invite is None else f" with invitation {invite.id}")
        if invite is not None:
            try:
                yield invites.accepted(invite, user)
            except Exception:
                api.log.failure("the contacts of invitation {id} were not added",
                                id=invite.id)

    # After authentication (routed iqs)

    @staticmethod
    def _account(stanza):
        """The account asking about itself: to its host or its bare JID."""
        sender = stanza.sender
        if sender is None or sender.local is None or stanza.origin is None or \
                stanza.recipient not in (JID(None, sender.domain, None), sender.bare):
            raise StanzaError("service-unavailable")
        return sender.bare

    def registered(self, stanza):
        """§3.1: an account is registered; its username."""
        user = self._account(stanza)
        query = domish.Element((NS_REGISTER, "query"))
        query.addElement("registered")
        query.addElement("instructions", content="You are registered. Send a new password "
                         "to change it, or <remove/> to delete the account.")
        query.addElement("username", content=user.local)
        return query

    def change(self, stanza):
        """§3.3 password change or §3.2 cancellation."""
        query = _strip(stanza.element)
        user = self._account(stanza)
        if self._api.hosts[user.domain].authentication != "password":
            raise StanzaError("not-allowed", "this host has no passwords")
        if child(query, NS_REGISTER, "remove") is not None:
            if len(list(query.elements())) != 1:
                raise StanzaError("bad-request", "<remove/> must be alone in the query")
            return self._remove(stanza, user)
        fields = submitted(query, (NS_CHANGE_PASSWORD, NS_REGISTER))
        if "username" in fields and not _names(fields["username"], user):
            raise StanzaError("not-allowed", "only the account's own password can be changed")
        password = _password(fields, self._api.options_for(user.domain), "bad-request")
        accounts = self._api.service("accounts")
        d = accounts.set_password(user, password, keep=_stream(stanza))
        d.addErrback(_refused, accounts.PasswordRefused)
        return d.addCallback(lambda _: None)

    @defer.inlineCallbacks
    def _remove(self, stanza, user):
        roster, subscriptions = self._api.service("roster"), self._api.service("subscription")
        if roster is not None and subscriptions is not None:
            yield roster.change(user, self._cancel_subscriptions, roster, subscriptions, user)
        stream = _stream(stanza)
        accounts = self._api.service("accounts")
        yield accounts.delete(user, keep=stream)
        # §3.2: the result, then the stream error; handle_iq's own result
        # goes to the session ended here, which drops it.
        stanza.origin.send(iq_result(stanza.element))
        if stream is not None:
            stream.close(*accounts.DELETED)

    @staticmethod
    @defer.inlineCallbacks
    def _cancel_subscriptions(roster, subscriptions, user):
        """Within a roster change of ``user``: cancel the subscriptions of
        its roster items, and refuse the requests of others (RFC 6121
        §3.2: ``unsubscribed``)."""
        _, items = yield roster.roster(user)
        requests = yield subscriptions.requests.get_all(user.local, user.domain)
        listed = {item.jid for item in items}
        for item in [*items, *(RosterItem(jid=contact) for contact in requests
                               if contact not in listed)]:
            yield subscriptions.cancel(user, item)


def _to_host(to, domain):
    """Whether an iq's ``to`` (None: the server) is hosted ``domain``."""
    try:
        return to is None or JID.parse(to) == JID(None, domain, None)
    except InvalidJID:
        return False


def _names(username, user):
    """Whether ``username`` (a localpart or a bare JID) names ``user``."""
    try:
        return JID.parse(username.strip() if "@" in username
                         else f"{username.strip()}@{user.domain}") == user
    except InvalidJID:
        return False


def _stream(stanza):
    """The stream (ClientConnection) of the session that sent ``stanza``."""
    return getattr(stanza.origin.carrier, "connection", None)


def _refused(failure, refusal):
    failure.trap(refusal)
    raise StanzaError("not-acceptable", str(failure.value))


def setup(api):
    api.depends("accounts")
    api.depends("invites")
    registration = Registration(api)
    api.provide("register", registration)
    for namespace in (NS_FEATURE, NS_IBR_TOKEN, NS_INVITE):
        api.stream_feature(registration.feature(namespace), ENCRYPTED)
    api.streams.on_element(NS_CLIENT, "iq", registration.element)
    api.disco_feature(NS_REGISTER)
    api.handle_iq("get", (HOST, BARE), NS_REGISTER, registration.registered)
    api.handle_iq("set", (HOST, BARE), NS_REGISTER, registration.change)
