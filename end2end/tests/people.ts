// Helpers for the page's tests: screen sizes, a name set from the page, and other people
// as official Socket.IO clients (legacy, as existing apps connect).
import { Page, expect } from "@playwright/test";
import { io, Socket } from "socket.io-client";
import { ChatServer } from "./server";

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

/** Sets the page's username (Enter in the field) and waits for the confirmation. */
export async function setName(page: Page, name: string) {
  await page.locator("#username").fill(name);
  await page.locator("#username").press("Enter");
  await expect(page.getByText(`Your username is set to ${name}`, { exact: true })).toBeVisible();
}

/** A legacy Socket.IO client (the official JS client) named `name`, as another person. */
export async function person(server: ChatServer, name: string): Promise<Socket> {
  const socket = io(server.url, { transports: ["websocket"], forceNew: true });
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  const named = new Promise<void>((resolve) =>
    socket.on("message", (text: string) => text === `Your username is set to ${name}` && resolve()),
  );
  socket.emit("set_username", name);
  await named;
  return socket;
}

/** Sends `texts` from `socket` (named `name`) and waits until they all came back. */
export async function sendAll(socket: Socket, name: string, texts: string[]) {
  const last = `${name}: ${texts[texts.length - 1]}`;
  const echoed = new Promise<void>((resolve) => socket.on("message", (text: string) => text === last && resolve()));
  for (const text of texts) socket.send(text);
  await echoed;
}
