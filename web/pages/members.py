"""``/orgs/{org}/members``: who is in the organization, their roles, and pending invitations."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.invite import invite_form
from web.components.layout import signed_in_page
from web.components.ui import (
    card,
    confirm_dialog,
    empty_state,
    error_callout,
    loading_rows,
    page_header,
    section_title,
)
from web.state.members import ROLES, MembersState


def member_row(m: dict[str, str]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.text(m["email"], weight="medium", size="2"),
                rx.cond(m["name"] != "", rx.text(m["name"], size="1", color_scheme="gray")),
                spacing="0",
            )
        ),
        rx.table.cell(
            rx.cond(
                MembersState.can_manage & (m["email"] != MembersState.user_email),
                rx.select(
                    ROLES,
                    value=m["role"],
                    on_change=lambda r: MembersState.change_role(m["user_id"], r),
                    size="1",
                    aria_label="Role of " + m["email"],
                ),
                rx.badge(m["role"], variant="soft"),
            )
        ),
        rx.table.cell(rx.text(m["joined"], size="2", color_scheme="gray")),
        rx.table.cell(
            rx.cond(
                MembersState.can_manage | (m["email"] == MembersState.user_email),
                rx.button(
                    rx.cond(m["email"] == MembersState.user_email, "Leave", "Remove"),
                    variant="ghost",
                    color_scheme="red",
                    size="1",
                    on_click=MembersState.ask_remove(m["user_id"], m["email"]),
                ),
            ),
            text_align="right",
        ),
        align="center",
    )


def invitation_row(i: dict[str, str]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(i["email"], size="2")),
        rx.table.cell(rx.badge(i["role"], variant="soft")),
        rx.table.cell(rx.text(i["expires"], size="2", color_scheme="gray")),
        rx.table.cell(
            rx.button(
                "Cancel",
                variant="ghost",
                color_scheme="gray",
                size="1",
                on_click=MembersState.cancel_invitation(i["id"]),
            ),
            text_align="right",
        ),
        align="center",
    )


def members_table() -> rx.Component:
    return rx.table.root(
        rx.table.header(
            rx.table.row(
                rx.table.column_header_cell("Member"),
                rx.table.column_header_cell("Role"),
                rx.table.column_header_cell("Joined"),
                rx.table.column_header_cell(""),
            )
        ),
        rx.table.body(rx.foreach(MembersState.members, member_row)),
        width="100%",
        variant="surface",
    )


def invitations_card() -> rx.Component:
    return card(
        section_title("Invite people"),
        rx.cond(
            MembersState.invitations_available,
            rx.vstack(
                invite_form(MembersState, MembersState.invite),
                rx.cond(
                    MembersState.invitations.length() > 0,
                    rx.table.root(
                        rx.table.header(
                            rx.table.row(
                                rx.table.column_header_cell("Pending invitation"),
                                rx.table.column_header_cell("Role"),
                                rx.table.column_header_cell("Expires"),
                                rx.table.column_header_cell(""),
                            )
                        ),
                        rx.table.body(rx.foreach(MembersState.invitations, invitation_row)),
                        width="100%",
                        variant="ghost",
                    ),
                    rx.text("No pending invitations.", size="2", color_scheme="gray"),
                ),
                spacing="4",
                width="100%",
            ),
            rx.text("Invitations are not available on this server yet.", size="2", color_scheme="gray"),
        ),
    )


def page() -> rx.Component:
    return signed_in_page(
        "members",
        page_header("Members", "People who can see and manage this organization."),
        error_callout(MembersState.error),
        rx.cond(
            MembersState.loading,
            loading_rows(3),
            rx.vstack(
                rx.cond(
                    MembersState.members.length() > 0,
                    members_table(),
                    empty_state("users", "No members", "Invite your team to collaborate."),
                ),
                rx.cond(MembersState.can_manage, invitations_card()),
                spacing="5",
                width="100%",
            ),
        ),
        confirm_dialog(
            open_=MembersState.remove_target != "",
            title="Remove this member?",
            description="“" + MembersState.remove_email + "” loses access to this organization at once.",
            confirm_label="Remove",
            on_confirm=MembersState.confirm_remove,
            on_cancel=MembersState.cancel_remove,
            busy=MembersState.busy,
            test_id="remove-member",
        ),
    )
