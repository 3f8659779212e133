// decide(state, command, context) -> event | event[]
// Throwing an Error rejects the command with 422 DecideError and the error's message.

function positiveAmount(command) {
  const amount = command.amount;
  if (!Number.isSafeInteger(amount) || amount <= 0) {
    throw new Error("amount must be a positive integer");
  }
  return amount;
}

function requireUsable(state) {
  if (state.status === "closed") throw new Error("account is closed");
}

export function decide(state, command) {
  switch (command.type) {
    case "open":
    case "open_account": {
      if (state.status !== "new") throw new Error("account is already open");
      const initial = command.initial_balance === undefined ? 0 : command.initial_balance;
      if (!Number.isSafeInteger(initial) || initial < 0) {
        throw new Error("initial_balance must be a non-negative integer");
      }
      const event = { type: "opened", initial_balance: initial };
      if (typeof command.owner === "string") event.owner = command.owner;
      return event;
    }
    case "deposit": {
      requireUsable(state);
      return { type: "deposited", amount: positiveAmount(command) };
    }
    case "withdraw": {
      requireUsable(state);
      const amount = positiveAmount(command);
      if (amount > state.balance) throw new Error("insufficient funds");
      return { type: "withdrawn", amount };
    }
    case "close": {
      if (state.status !== "open") throw new Error("account is not open");
      if (state.balance !== 0) throw new Error("balance must be 0 to close the account");
      return { type: "closed" };
    }
    default:
      throw new Error(`unknown command type: ${command.type}`);
  }
}
