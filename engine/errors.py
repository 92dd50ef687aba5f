"""Errors the user can act on: one line that says what went wrong and how to fix it."""


class ChattuneError(Exception):
    """A problem the user can fix. `str(err)` is the whole message, hint included."""

    def __init__(self, problem: str, hint: str = ""):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem} ({hint})" if hint else problem)


class ModelNotFound(ChattuneError):
    pass


class WorkspaceError(ChattuneError):
    pass


class AdapterError(ChattuneError):
    pass
