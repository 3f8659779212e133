// apply(state, event) -> next state. Must not throw for events decide produced.

export function apply(state, event) {
  switch (event.type) {
    case "opened": {
      const next = { ...state, status: "open", balance: event.initial_balance };
      if (event.owner !== undefined) next.owner = event.owner;
      return next;
    }
    case "deposited":
      // An account that was never opened springs into existence with its first deposit.
      return {
        ...state,
        status: state.status === "new" ? "open" : state.status,
        balance: state.balance + event.amount,
      };
    case "withdrawn":
      return { ...state, balance: state.balance - event.amount };
    case "closed":
      return { ...state, status: "closed" };
    default:
      return state;
  }
}
