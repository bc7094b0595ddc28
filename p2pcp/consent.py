"""How a receiver answers an offer: under ``--yes`` by its flags alone, otherwise by questions
on the terminal (accept; hidden entries in the home directory; what becomes of files here that
differ from the sender's). The answer is what ``receiving.FileReceiver`` takes as ``decide``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from . import conflicts
from .ask import ask_choice, ask_yes_no
from .errors import RefusedError
from .escape import show
from .events import OfferReceived


@dataclass(frozen=True)
class Consent:
    """One receiver's way of answering (``receiving.Decide``)."""

    console: Console
    """Where questions go (stderr)."""
    pause: Callable[[], None]
    """Stops a spinner before a question."""
    yes: bool
    """``--yes``: accept without asking."""
    allow_hidden: bool
    """``--allow-hidden``: dot entries straight into the home directory need no question."""
    choice: str
    """``overwrite``, ``skip`` or ``rename`` from the flags, for files that differ (empty:
    ask, or refuse under ``--yes``)."""

    async def __call__(self, offer: OfferReceived) -> bool | str:
        """False declines; True or a choice accepts (an empty choice refuses files that
        differ, leaving the sender waiting)."""
        if all(e.kind == "text" for e in offer.entries):
            return True  # a text message is only shown, never written
        home = ", ".join(show(name) for name in offer.home_hidden)
        if self.yes:
            if offer.home_hidden and not self.allow_hidden:
                raise RefusedError(
                    f"refused: the offer would create {home} directly in your home directory; "
                    "accept that at the prompt, or with --yes --allow-hidden"
                )
            return self.choice or True
        self.pause()
        if not await ask_yes_no(self.console, "Accept?", default=True):
            return False
        if offer.home_hidden and not self.allow_hidden:
            question = (
                f"This writes [bold]{escape(home)}[/] directly in your home directory "
                "(startup files and settings live there). Write them?"
            )
            if not await ask_yes_no(self.console, question, default=False):
                return False
        return self.choice or await self._for_differing(offer)

    async def _for_differing(self, offer: OfferReceived) -> bool | str:
        """What becomes of the files here that differ from the sender's (asked only when
        some do)."""
        differ = sum(1 for e in offer.entries if e.status == conflicts.DIFFERS)
        if not differ:
            return True
        answer = await ask_choice(
            self.console,
            f"{conflicts.differ_here(differ)} from the sender's:",
            {"overwrite": "replace yours", "skip": "keep yours", "rename": "keep both",
             "cancel": "stop"},
        )  # fmt: skip
        return "" if answer == "cancel" else answer  # cancelled: refused, the sender stays
