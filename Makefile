# xmppd — developer and operator shortcuts.
#   make run    serve the domain "localhost" from ./var (SQLite, self-signed certificate)
#   make test   run the whole test suite
#   make bench  run the benchmark against a local xmppd

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
VAR    ?= var
DOMAIN ?= localhost
DEMO   ?= demo@$(DOMAIN)

# The venv is rebuilt when the package metadata changes.  The project is
# installed in "compat" editable mode: setuptools' default editable mode uses
# an import hook that hides twisted/plugins/ from twistd.
$(BIN)/.installed: setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $@

.PHONY: install run test bench clean
install: $(BIN)/.installed

$(VAR)/xmppd.toml: | $(BIN)/.installed
	$(BIN)/xmppctl init $(VAR) --domain $(DOMAIN)

$(VAR)/demo-password: | $(VAR)/xmppd.toml
	umask 077; $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(12))' > $@.tmp
	$(BIN)/xmppctl -c $(VAR)/xmppd.toml adduser $(DEMO) < $@.tmp
	mv $@.tmp $@

run: $(BIN)/.installed $(VAR)/xmppd.toml $(VAR)/demo-password
	@echo "Demo account: $(DEMO)  password: $$(cat $(VAR)/demo-password)"
	@echo "Certificate: $(VAR)/certs/$(DOMAIN).crt (self-signed; accept it in your client)"
	$(BIN)/xmppctl -c $(VAR)/xmppd.toml migrate
	exec $(BIN)/twistd -n --pidfile= xmppd --config $(VAR)/xmppd.toml

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
