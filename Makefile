# Everything a fresh machine needs: `make run` (the app) and `make test` (the suite).
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup run test check-install lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/chattune $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The wheel in a new venv outside the checkout, as `pip install .` gives it to a user (CI runs it).
check-install: $(STAMP)
	bash scripts/check_install.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/chattune bench all --json bench.json

clean:
	rm -rf $(VENV)
