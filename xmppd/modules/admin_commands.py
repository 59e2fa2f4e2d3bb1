"""Server administration over ad-hoc commands (XEP-0050, the ``adhoc``
service): the Service Administration commands of XEP-0133 v1.3, the
invitation commands of XEP-0401 v0.6 (§5.1, §5.4) and a configuration
reload.

Nodes ``http://jabber.org/protocol/admin#NAME``, with the forms (FORM_TYPE
``http://jabber.org/protocol/admin``) and fields of XEP-0133's use cases
and its field registry:

- ``add-user`` (accountjid, password, password-verify), ``delete-user``,
  ``disable-user``, ``reenable-user`` (accountjids), ``change-user-password``
  (accountjid, password), ``get-registered-users-num`` and
  ``get-registered-users-list`` (max_items): the ``accounts`` service, on
  hosts with password accounts.  Disabling ends the account's sessions and
  its logins fail with ``account-disabled`` until it is re-enabled.
- ``end-user-session`` (accountjids: an account's JID ends all its
  sessions, a full JID that one), with the stream error of ``xmppctl
  kick`` (:data:`xmppd.admin.END_REASONS`).
- ``get-online-users-num``, ``get-online-users-list`` (max_items),
  ``user-stats`` (accountjid: rostersize, onlineresources, ipaddresses) and
  ``announce`` (a ``headline`` message from the host to each session of
  the host) read the bound sessions as ``xmppctl sessions`` does, and
  ``urn:xmppd:admin#reload`` re-reads the configuration as ``xmppctl
  reload`` does: the admin socket's ``sessions`` and ``reload`` commands
  (:data:`xmppd.admin.COMMANDS`) on the ``control`` service, the running
  server's :class:`~xmppd.control.Controller`; they are offered only where
  it is there.

They are for the admins of the host they are sent to (``[hosts."D"]
admins``; XEP-0133 'Security Considerations'): others do not see them in
disco#items and get ``forbidden``, and so does an admin who names an
account of another host.  A form without a required field, a JID that is
none (or no account's), passwords that differ or a password the server
refuses are ``bad-payload`` (the session stays, to be corrected); an
account that exists already is ``conflict`` ('Error Handling'); an account
that does not exist is named in a ``<note type='error'/>`` of the
completed command.

XEP-0401: ``urn:xmpp:invite#invite`` makes a user's invitation
(``xmpp:USER@HOST?roster;preauth=...``) for the accounts of a host where
``[admin_commands] allow_user_invites = true`` (per host), and for its
admins; ``urn:xmpp:invite#create-account`` makes an invitation to register
(``xmpp:HOST?register;preauth=...``) for its admins, where registration
takes invitations.  Both complete at once with the invitation form
(``urn:xmpp:invite#invitation``: uri, landing-url, expire) of the
``invites`` service; xmppd reserves no username for an invitation, so the
second asks for none.
"""

from twisted.internet import defer

from xmppd.admin import COMMANDS, END_REASONS
from xmppd.core.stanzas import StanzaError, make_stanza, xep0082_stamp
from xmppd.jid import JID, InvalidJID
from xmppd.options import Option, Options, boolean
from xmppd.storage import UserExists, UserNotFound
from xmppd.wokkel_compat import data_form

OPTIONS = Options(  # [admin_commands]
    allow_user_invites=Option(False, boolean),  # accounts run urn:xmpp:invite#invite
)

NS_ADMIN = "http://jabber.org/protocol/admin"
NS_INVITATION = "urn:xmpp:invite#invitation"
RELOAD = "urn:xmppd:admin#reload"
MAX_ITEMS = ("25", "50", "75", "100", "150", "200", "none")
DEFAULT_MAX_ITEMS = "100"


def admin_node(name):
    return f"{NS_ADMIN}#{name}"


class AdminCommands:
    """The commands, and who may run them."""

    def __init__(self, api):
        self._api = api
        self._adhoc = api.service("adhoc")
        self._accounts = api.service("accounts")

    # Who may run what

    def admin(self, requester, domain):
        return self._accounts.is_admin(requester, domain)

    def account_admin(self, requester, domain):
        """An admin of a host with password accounts."""
        return _password_host(self._api, domain) and self.admin(requester, domain)

    def operator(self, requester, domain):
        """An admin, where the running server's controller is reachable."""
        return self._api.service("control") is not None and self.admin(requester, domain)

    def inviter(self, requester, domain):
        """An account of a password host where users may invite, or its admin."""
        return (self._api.service("invites") is not None and _password_host(self._api, domain)
                and requester.local is not None and requester.domain == domain
                and (self.admin(requester, domain)
                     or self._api.options_for(domain).allow_user_invites))

    def account_creator(self, requester, domain):
        return self._api.service("invites") is not None and self.account_admin(requester, domain)

    # Commands asking one form, then acting on it

    def asking(self, form, act):
        """A command that asks ``form()`` first, then runs ``act(request)``."""
        def run(request):
            return self._adhoc.Ask(form()) if request.stage == 0 else act(request)
        return run

    @defer.inlineCallbacks
    def add_user(self, request):
        user = self._account(request)
        password = _raw(request.form, "password")
        verify = _raw(request.form, "password-verify")
        if verify is not None and verify != password:
            raise self._adhoc.bad_payload("the passwords differ")
        try:
            yield self._accounts.create(user, password)
        except UserExists:
            raise StanzaError("conflict", f"{user} already exists") from None
        except self._accounts.PasswordRefused as e:
            raise self._adhoc.bad_payload(str(e)) from None
        return self._adhoc.Done(note=f"{user} was added")

    @defer.inlineCallbacks
    def change_user_password(self, request):
        user = self._account(request)
        try:
            yield self._accounts.set_password(user, _raw(request.form, "password"))
        except UserNotFound:
            return self._failed(f"there is no account {user}")
        except self._accounts.PasswordRefused as e:
            raise self._adhoc.bad_payload(str(e)) from None
        return self._adhoc.Done(note=f"the password of {user} was changed; "
                                     f"its sessions were ended")

    def for_each(self, act, bare=True):
        """A stage doing ``act(request, jid)`` (a Deferred of a note) for
        each JID of the ``accountjids`` field."""
        @defer.inlineCallbacks
        def run(request):
            notes = []
            for jid in self._jids(request, "accountjids", bare):
                notes.append((yield act(request, jid)))
            return self._adhoc.Done(note=notes)
        return run

    @defer.inlineCallbacks
    def delete(self, request, user):
        try:
            yield self._accounts.delete(user)
        except UserNotFound:
            return self._adhoc.Note(f"there is no account {user}", "error")
        return self._adhoc.Note(f"{user} was deleted")

    @defer.inlineCallbacks
    def disable(self, request, user):
        try:
            ended = yield self._accounts.disable(user, by=request.requester)
        except UserNotFound:
            return self._adhoc.Note(f"there is no account {user}", "error")
        return self._adhoc.Note(f"{user} was disabled ({_sessions_ended(ended)})")

    @defer.inlineCallbacks
    def reenable(self, request, user):
        if not (yield self._accounts.exists(user)):
            return self._adhoc.Note(f"there is no account {user}", "error")
        if (yield self._accounts.enable(user)):
            return self._adhoc.Note(f"{user} was re-enabled")
        return self._adhoc.Note(f"{user} was not disabled")

    def end_sessions(self, request, jid):
        ended = self._api.streams.end_account(jid, *END_REASONS["kicked"])
        if not ended:
            return defer.succeed(self._adhoc.Note(f"{jid} has no session", "warn"))
        return defer.succeed(self._adhoc.Note(f"ended {', '.join(sorted(ended))}"))

    @defer.inlineCallbacks
    def user_stats(self, request):
        user = self._account(request)
        if not (yield self._accounts.exists(user)):
            return self._failed(f"there is no account {user}")
        sessions = [s for s in self._sessions(request.domain)
                    if s["jid"].partition("/")[0] == user.bare_str]
        fields = [data_form.Field("text-multi", var="onlineresources", label="Online resources",
                                  values=[s["jid"].partition("/")[2] for s in sessions]),
                  data_form.Field("list-multi", var="ipaddresses", label="IP addresses",
                                  values=sorted({_ip(s["address"]) for s in sessions
                                                 if s["address"]}))]
        roster = self._api.service("roster")
        if roster is not None:
            _, items = yield roster.roster(user)
            fields.insert(0, data_form.Field(var="rostersize", label="Roster size",
                                             value=str(len(items))))
        return self._adhoc.Done(form=_result(fields))

    @defer.inlineCallbacks
    def registered_users_num(self, request):
        users = yield self._accounts.list(request.domain)
        return self._adhoc.Done(form=_result([data_form.Field(
            var="registeredusersnum", label="The number of registered users",
            value=str(len(users)))]))

    @defer.inlineCallbacks
    def registered_users_list(self, request):
        limit = self._max_items(request)
        users = yield self._accounts.list(request.domain)
        return self._listed(users, limit, "registereduserjids", "The list of all users",
                            request.domain)

    def online_users_num(self, request):
        users = self._online(request.domain)
        return self._adhoc.Done(form=_result([data_form.Field(
            var="onlineusersnum", label="The number of online users", value=str(len(users)))]))

    def online_users_list(self, request):
        limit = self._max_items(request)
        return self._listed(self._online(request.domain), limit, "onlineuserjids",
                            "The list of all online users", request.domain)

    @defer.inlineCallbacks
    def announce(self, request):
        text = "\n".join(request.form.fields["announcement"].values)
        sent = []
        for session in self._sessions(request.domain):
            message = make_stanza("message", to=session["jid"], from_=request.domain,
                                  type_="headline")
            message.addElement("body", content=text)
            sent.append(defer.maybeDeferred(self._api.route, message))
        yield defer.gatherResults(sent, consumeErrors=True)
        return self._adhoc.Done(note=f"the announcement was sent to {len(sent)} sessions")

    def reload(self, request):
        answer = COMMANDS["reload"](self._api.service("control"), {})
        return self._adhoc.Done(note=[
            self._adhoc.Note(line, "error" if line.startswith("error")
                             else "warn" if line.startswith("warning") else "info")
            for line in answer["messages"]])

    @defer.inlineCallbacks
    def invite(self, request):
        invite = yield self._api.service("invites").create(request.domain,
                                                           inviter=request.requester)
        return self._adhoc.Done(form=_invitation(invite))

    @defer.inlineCallbacks
    def create_account(self, request):
        register = self._api.service("register")
        if register is None or not register.allows(request.domain):
            return self._failed(
                f"registration is off on {request.domain}, so an invitation to register "
                f"cannot be used: set [hosts.\"{request.domain}\".register] allow = true")
        invite = yield self._api.service("invites").create(request.domain)
        return self._adhoc.Done(form=_invitation(invite))

    # Helpers

    def _failed(self, text):
        return self._adhoc.Done(note=self._adhoc.Note(text, "error"))

    def _jids(self, request, var, bare=True):
        """The accounts' JIDs (bare, unless ``bare`` is false) of field
        ``var``, each of the host the command runs on."""
        jids = []
        for text in _values(request.form, var):
            try:
                jid = JID.parse(text)
            except InvalidJID as e:
                raise self._adhoc.bad_payload(f"{text!r} is not a valid JID: {e}") from None
            if jid.local is None:
                raise self._adhoc.bad_payload(
                    f"{text} is not the JID of an account (user@{request.domain})")
            if jid.domain != request.domain:
                raise StanzaError("forbidden", f"{jid.bare_str} is not an account of "
                                               f"{request.domain}, the host asked")
            jids.append(jid.bare if bare else jid)
        return list(dict.fromkeys(jids))

    def _account(self, request):
        jids = self._jids(request, "accountjid")
        if len(jids) != 1:
            raise self._adhoc.bad_payload("accountjid: give one JID")
        return jids[0]

    def _max_items(self, request):
        value = (_values(request.form, "max_items") or [DEFAULT_MAX_ITEMS])[0]
        if value == "none":
            return None
        if not value.isdigit() or int(value) == 0:
            raise self._adhoc.bad_payload(f"max_items: {value!r} is not a positive number")
        return int(value)

    def _sessions(self, domain):
        """The bound sessions of ``domain``, as ``xmppctl sessions`` lists them."""
        return COMMANDS["sessions"](self._api.service("control"), {"domain": domain})["sessions"]

    def _online(self, domain):
        """The usernames of the accounts of ``domain`` with a bound session, sorted."""
        return sorted({s["jid"].partition("@")[0] for s in self._sessions(domain)})

    def _listed(self, users, limit, var, label, domain):
        shown = users if limit is None else users[:limit]
        field = data_form.Field("jid-multi", var=var, label=label,
                                values=[JID(user, domain, None) for user in shown])
        note = None if len(shown) == len(users) else \
            f"the first {len(shown)} of {len(users)} are shown"
        return self._adhoc.Done(form=_result([field]), note=note)


def _password_host(api, domain):
    host = api.hosts.get(domain)
    return host is not None and host.authentication == "password"


def _values(form, var):
    """The non-empty values of field ``var`` of ``form``, stripped."""
    field = None if form is None else form.fields.get(var)
    return [] if field is None else [v.strip() for v in field.values if str(v).strip()]


def _raw(form, var):
    """The first value of field ``var`` as given (a password), or None."""
    field = None if form is None else form.fields.get(var)
    return field.values[0] if field is not None and field.values else None


def _sessions_ended(ended):
    return f"{len(ended)} session{'' if len(ended) == 1 else 's'} ended"


def _ip(address):
    """The host of an address as ``xmppctl sessions`` shows it
    (``192.0.2.1:5222``, ``[2001:db8::1]:5222``)."""
    if address.startswith("["):
        return address[1:address.find("]")]
    return address.rpartition(":")[0] or address


def _form(title, instructions, fields):
    return data_form.Form("form", title=title, instructions=[instructions],
                          formNamespace=NS_ADMIN, fields=fields)


def _result(fields, namespace=NS_ADMIN):
    return data_form.Form("result", formNamespace=namespace, fields=fields)


def _invitation(invite):
    """The result form of an invitation (XEP-0401 §5.1, §7)."""
    fields = [data_form.Field(var="uri", label="Invitation", value=invite.uri)]
    if invite.url is not None:
        fields.append(data_form.Field(var="landing-url", label="Web page", value=invite.url))
    fields.append(data_form.Field(var="expire", label="Expires",
                                  value=xep0082_stamp(invite.expires)))
    return _result(fields, NS_INVITATION)


def _account_form(title, instructions, label):
    return lambda: _form(title, instructions, [data_form.Field(
        "jid-single", var="accountjid", label=label, required=True)])


def _accounts_form(title, instructions, label):
    return lambda: _form(title, instructions, [data_form.Field(
        "jid-multi", var="accountjids", label=label, required=True)])


def _add_user_form():
    return _form("Adding a User", "Fill out this form to add a user.", [
        data_form.Field("jid-single", var="accountjid",
                        label="The Jabber ID for the account to be added", required=True),
        data_form.Field("text-private", var="password", label="The password for this account",
                        required=True),
        data_form.Field("text-private", var="password-verify", label="Retype password")])


def _change_password_form():
    return _form("Changing a User Password", "Fill out this form to change a user's password.", [
        data_form.Field("jid-single", var="accountjid", label="The Jabber ID for this account",
                        required=True),
        data_form.Field("text-private", var="password", label="The password for this account",
                        required=True)])


def _max_items_form(title, instructions):
    return lambda: _form(title, instructions, [data_form.Field(
        "list-single", var="max_items", label="Maximum number of items to show",
        value=DEFAULT_MAX_ITEMS, options=[data_form.Option(value) for value in MAX_ITEMS])])


def _announce_form():
    return _form("Making an Announcement",
                 "Fill out this form to make an announcement to all online users of this host.",
                 [data_form.Field("text-multi", var="announcement", label="Announcement",
                                  required=True)])


def setup(api):
    api.depends("adhoc")
    api.depends("accounts")
    commands = AdminCommands(api)
    asking, for_each = commands.asking, commands.for_each
    table = [
        ("add-user", "Add a User", asking(_add_user_form, commands.add_user),
         commands.account_admin),
        ("delete-user", "Delete a User", asking(_accounts_form(
            "Deleting a User", "Fill out this form to delete a user.",
            "The Jabber ID(s) to delete"), for_each(commands.delete)), commands.account_admin),
        ("disable-user", "Disable a User", asking(_accounts_form(
            "Disabling a User", "Fill out this form to disable a user.",
            "The Jabber ID(s) to disable"), for_each(commands.disable)),
         commands.account_admin),
        ("reenable-user", "Re-Enable a User", asking(_accounts_form(
            "Re-Enable a User", "Fill out this form to re-enable a user.",
            "The Jabber ID(s) to re-enable"), for_each(commands.reenable)),
         commands.account_admin),
        ("end-user-session", "End a User Session", asking(_accounts_form(
            "Ending a User Session", "Fill out this form to end a user's session.",
            "The Jabber ID(s) for which to end sessions"),
            for_each(commands.end_sessions, bare=False)), commands.admin),
        ("change-user-password", "Change a User Password",
         asking(_change_password_form, commands.change_user_password), commands.account_admin),
        ("user-stats", "Get User Statistics", asking(_account_form(
            "Get User Statistics", "Fill out this form to gather user statistics.",
            "The Jabber ID for statistics"), commands.user_stats), commands.operator),
        ("get-registered-users-num", "Get Number of Registered Users",
         commands.registered_users_num, commands.account_admin),
        ("get-registered-users-list", "Get List of Registered Users", asking(_max_items_form(
            "Requesting List of Registered Users",
            "Fill out this form to request the registered users of this host."),
            commands.registered_users_list), commands.account_admin),
        ("get-online-users-num", "Get Number of Online Users", commands.online_users_num,
         commands.operator),
        ("get-online-users-list", "Get List of Online Users", asking(_max_items_form(
            "Requesting List of Online Users",
            "Fill out this form to request the online users of this host."),
            commands.online_users_list), commands.operator),
        ("announce", "Send Announcement to Online Users",
         asking(_announce_form, commands.announce), commands.operator),
    ]
    adhoc = api.service("adhoc")
    for name, label, run, allowed in table:
        adhoc.add(admin_node(name), label, run, allowed)
    adhoc.add(RELOAD, "Reload the Configuration", commands.reload, commands.operator)
    adhoc.add("urn:xmpp:invite#invite", "Invite a User", commands.invite, commands.inviter)
    adhoc.add("urn:xmpp:invite#create-account", "Create an Account", commands.create_account,
              commands.account_creator)
