"""The Streamlit ops console: open incidents first, with their root cause and evidence."""

from __future__ import annotations

import time

import streamlit as st
from vigil.ui.views import incident_row

from vigil.settings import load_settings
from vigil.store import Store


@st.cache_resource
def _store(url: str) -> Store:
    return Store.open(url)


def main() -> None:
    st.set_page_config(page_title="Vigil", layout="wide")
    st.title("Vigil")
    settings = load_settings()
    store = _store(settings.database_url)
    incidents = store.incidents(limit=200)
    open_ = [i for i in incidents if i.state == "open"]
    left, mid, right = st.columns(3)
    left.metric("Open incidents", len(open_))
    mid.metric("Critical", sum(1 for i in open_ if i.severity == "critical"))
    right.metric("Updated", time.strftime("%H:%M:%S"))
    if not incidents:
        st.success("No incidents. The cluster looks healthy.")
    else:
        st.subheader("Incidents")
        st.dataframe([incident_row(i) for i in incidents], use_container_width=True,
                     hide_index=True)
        for incident in incidents[:20]:
            with st.expander(f"{incident.severity.upper()} · {incident.title} · {incident.id}"):
                st.write(incident.explanation)
                for alert in store.alerts(incident.id, limit=20):
                    st.code(alert.evidence.get("log", alert.summary), language=None)
    if st.button("Refresh"):
        st.rerun()


main()
