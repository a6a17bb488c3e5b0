// Shared by the TypeScript steps of this feature (imported as './messages.ts').
export const MESSAGES = 'polyglot_messages';

export interface Message {
  id: string;
  text: string;
  room: string;
  sender: string | null;
  status: 'sent' | 'analyzed';
  sentAt: string;
  analysis?: { words: number; tone: string; language: string };
}
