"""Node configuration (XEP-0060 §8.2, the ``pubsub#node_config`` form of
§16.4.4) and publish-options (§7.1.5, XEP-0222, XEP-0223).

A configuration is a dict of field var to value: text for single values
(booleans as ``"true"``/``"false"``), a list of texts for
``pubsub#roster_groups_allowed``.  :data:`FIELDS` says which fields a node
has, their types and choices; :func:`read_form` checks a submitted form
against them (a bad value is ``not-acceptable``, §8.2.5.3 of the owner
use cases); :func:`check_preconditions` compares publish-options with a
node's configuration: a field the node does not have, or a value it does
not hold, is ``conflict`` with ``precondition-not-met`` (§7.1.5).
``pubsub#max_items`` is a number or ``max``, the service's limit
(XEP-0060 v1.15+).
"""

from twisted.internet import defer

from xmppd.wokkel_compat import data_form

from . import NS_NODE_CONFIG, NS_PUBLISH_OPTIONS, error
from .elements import form_in

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("headline", "normal")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
ITEM_REPLY = ("owner", "publisher")
MAX_TEXT = 1024  # characters of a text field

# var -> (wokkel field type, choices or None, label)
FIELDS = {
    "pubsub#title": ("text-single", None, "A friendly name for the node"),
    "pubsub#description": ("text-single", None, "A description of the node"),
    "pubsub#type": ("text-single", None, "The type of the node's payloads"),
    "pubsub#access_model": ("list-single", ACCESS_MODELS, "Who may read and receive items"),
    "pubsub#roster_groups_allowed": ("text-multi", None,
                                     "Roster groups allowed by the roster access model"),
    "pubsub#publish_model": ("list-single", PUBLISH_MODELS, "Who may publish"),
    "pubsub#persist_items": ("boolean", None, "Keep items"),
    "pubsub#max_items": ("text-single", None, "How many items are kept (a number or max)"),
    "pubsub#send_last_published_item": ("list-single", SEND_LAST,
                                        "When the last published item is sent"),
    "pubsub#deliver_notifications": ("boolean", None, "Send event notifications"),
    "pubsub#deliver_payloads": ("boolean", None, "Send payloads with event notifications"),
    "pubsub#notify_retract": ("boolean", None, "Notify when an item is retracted"),
    "pubsub#notify_delete": ("boolean", None, "Notify when the node is deleted"),
    "pubsub#notification_type": ("list-single", NOTIFICATION_TYPES,
                                 "The message type of notifications"),
    "pubsub#itemreply": ("list-single", ITEM_REPLY, "Whom replies to items go to"),
}

PEP_DEFAULTS = {  # XEP-0163 §4 (presence access), XEP-0060 §16.4.4
    "pubsub#title": "",
    "pubsub#description": "",
    "pubsub#type": "",
    "pubsub#access_model": "presence",
    "pubsub#roster_groups_allowed": [],
    "pubsub#publish_model": "publishers",
    "pubsub#persist_items": "true",
    "pubsub#max_items": "1",
    "pubsub#send_last_published_item": "on_sub_and_presence",
    "pubsub#deliver_notifications": "true",
    "pubsub#deliver_payloads": "true",
    "pubsub#notify_retract": "true",
    "pubsub#notify_delete": "true",
    "pubsub#notification_type": "headline",
    "pubsub#itemreply": "owner",
}

_TRUE = ("1", "true")
_FALSE = ("0", "false")


def _value(var, field):
    """The normalised value of a submitted field; not-acceptable if invalid."""
    type_, choices, _ = FIELDS[var]
    if type_ == "text-multi":
        values = [str(value).strip() for value in field.values]
        if any(len(value) > MAX_TEXT for value in values):
            raise error("not-acceptable", text=f"{var}: a value is too long")
        return sorted({value for value in values if value})
    value = str(field.value if field.value is not None else "").strip()
    if type_ == "boolean":
        if value.lower() in _TRUE:
            return "true"
        if value.lower() in _FALSE:
            return "false"
        raise error("not-acceptable", text=f"{var} is a boolean, not {value!r}")
    if choices is not None and value not in choices:
        raise error("not-acceptable", text=f"{var} is one of {', '.join(choices)}")
    if var == "pubsub#max_items" and not (value == "max" or (value.isdigit() and 0 < int(value))):
        raise error("not-acceptable", text="pubsub#max_items is a positive number or max")
    if len(value) > MAX_TEXT:
        raise error("not-acceptable", text=f"{var} is too long")
    return value


def _fields(x, form_type):
    """The fields of a data form element of ``form_type`` but its FORM_TYPE;
    bad-request if it is no such form."""
    try:
        form = data_form.Form.fromElement(x)
    except Exception as e:  # wokkel raises plain errors on malformed forms
        raise error("bad-request", text=f"malformed data form: {e}")
    if form.formType not in ("submit", "form") or form.formNamespace not in (form_type, None):
        raise error("bad-request", text=f"expected a submitted {form_type} form")
    return {var: field for var, field in form.fields.items() if var != "FORM_TYPE"}


def read_form(x):
    """The configuration a submitted ``pubsub#node_config`` form sets
    (§8.2.4); fields the node does not have are ignored (§8.2.5.3 allows
    it, and clients send fields of other services)."""
    return {var: _value(var, field) for var, field in _fields(x, NS_NODE_CONFIG).items()
            if var in FIELDS}


def read_publish_options(x):
    """The preconditions of a ``pubsub#publish-options`` form (§7.1.5):
    a field no node has is a precondition that cannot be met."""
    options = {}
    for var, field in _fields(x, NS_PUBLISH_OPTIONS).items():
        if var not in FIELDS:
            raise error("conflict", "precondition-not-met", f"unknown field {var}")
        options[var] = _value(var, field)
    return options


def check_preconditions(config, options):
    """Whether the node's ``config`` holds every publish option (§7.1.5)."""
    for var, value in options.items():
        if config.get(var) != value:
            raise error("conflict", "precondition-not-met",
                        f"the node has {var} {config.get(var)!r}, not {value!r}")


def max_items(config, limit):
    """The number of items the node keeps: its ``pubsub#max_items`` (``max``:
    the service's ``limit``), at most ``limit``; 0 if it keeps none."""
    if config.get("pubsub#persist_items") != "true":
        return 0
    value = config.get("pubsub#max_items", "1")
    return limit if value == "max" else min(int(value), limit)


def config_form(config, form_type="form"):
    """The ``pubsub#node_config`` data form of ``config`` (§8.2.1, §16.4.4)."""
    form = data_form.Form(form_type, formNamespace=NS_NODE_CONFIG)
    for var, (type_, choices, label) in FIELDS.items():
        value = config.get(var)
        options = [data_form.Option(choice) for choice in choices] if choices else None
        if type_ == "text-multi":
            field = data_form.Field(type_, var=var, values=list(value or ()), label=label)
        elif type_ == "boolean":
            field = data_form.Field(type_, var=var, value=value == "true", label=label)
        else:
            field = data_form.Field(type_, var=var, value=value or "", label=label,
                                    options=options)
        form.addField(field)
    return form.toElement()


def enabled(config, var):
    return config.get(var) == "true"


@defer.inlineCallbacks
def reconfigure(store, service, node, configure, limit):
    """Apply the form of an owner's ``<configure/>`` (§8.2.4) to ``node`` of
    ``service`` in ``store``, dropping the items beyond its new
    ``pubsub#max_items`` (``limit``: the service's); a cancelled form
    changes nothing (§8.2.4.3)."""
    x = form_in(configure)
    if x is None:
        raise error("bad-request", text="a configuration form is needed")
    if x.getAttribute("type") == "cancel":
        return
    config = {**node.config, **read_form(x)}
    yield store.configure_node(service, node.name, config)
    for item in (yield store.get_items(service, node.name))[max_items(config, limit):]:
        yield store.retract(service, node.name, item.id)
